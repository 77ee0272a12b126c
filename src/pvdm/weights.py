"""Pretrained-network files (VGG16 for LPIPS, LPIPS heads, I3D for FVD, C3D for IS).

`resolve_weights(name_or_path)` returns a local path: an existing file given by the user, or the
named file from the cache folder, downloaded there (with a checksum check) when a network is
available. When the file cannot be had, the error names the file, where to put it, and where to
get it. Nothing here unpickles anything: loaders use `torch.load(weights_only=True)` or NumPy.
"""

from __future__ import annotations

import hashlib
import logging
import os
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


KNOWN_WEIGHTS: dict[str, WeightsFile] = {
    w.name: w
    for w in [
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
        ),
        WeightsFile(
            "i3d_pretrained_400",
            "i3d_pretrained_400.pt",
            "https://drive.google.com/uc?export=download&id=1fBNl3TS0LA5FEhZv5nMGJs2_7qQmvTmh",
            "Kinetics-400 I3D state dict used by the official PVDM/VideoGPT FVD code",
        ),
        WeightsFile(
            "i3d_torchscript",
            "i3d_torchscript.pt",
            "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
            "StyleGAN-V's TorchScript I3D (the detector behind most published FVD numbers)",
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
    path = cache_dir() / spec.filename
    if path.is_file():
        _check(spec, path)
        return path
    reason = "downloads are off"
    if download and spec.url:
        try:
            _download(spec, path)
            return path
        except (OSError, WeightsError) as e:
            reason = f"download failed: {e}"
    raise WeightsError(
        f"{spec.description} ('{spec.filename}') is not in {path.parent} and {reason}. "
        f"Download it from {spec.url} into that folder (or set PVDM_CACHE), "
        "or pass the file's path instead."
    )


def _check(spec: WeightsFile, path: Path) -> None:
    if spec.sha256 is None:
        return
    digest = file_sha256(path)
    if not digest.startswith(spec.sha256):
        raise WeightsError(
            f"{path} has SHA-256 {digest[:16]}..., expected {spec.sha256[:16]}...: the file is "
            f"corrupt or not {spec.description}. Delete it and download it again from {spec.url}."
        )


def _download(spec: WeightsFile, path: Path, timeout_sec: float = 60.0) -> None:
    log.info("downloading %s from %s", spec.filename, spec.url)
    with atomic_path(path) as tmp:
        with (
            urllib.request.urlopen(spec.url, timeout=timeout_sec) as response,
            open(tmp, "wb") as f,
        ):
            while chunk := response.read(1 << 20):
                f.write(chunk)
        _check(spec, tmp)
