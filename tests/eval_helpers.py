"""Helpers shared by the evaluation tests: real clips, fake folders, cheap stand-in networks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from data_helpers import shared
from einops import rearrange
from PIL import Image

from pvdm.data import DataConfig, eval_requests, open_dataset
from pvdm.metrics.i3d import InceptionI3d
from pvdm.metrics.protocols import Detector


def sky() -> Path:
    """The shared SkyTimelapse fixture (40 train, 8 test clips of 32 frames), or skip."""
    return shared("sky_mini")


def real_clips(num: int, resolution: int, seed: int = 0, split: str = "train") -> torch.Tensor:
    """The protocol's real clips drawn with the public data API: uint8 [num, 3, 16, res, res]."""
    cfg = DataConfig(path=str(sky()), split=split, resolution=resolution, frames=16)
    dataset = open_dataset(cfg)
    return torch.stack([dataset[r]["video"] for r in eval_requests(dataset, num, seed=seed)])


def add_noise(videos: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    """uint8 videos plus Gaussian noise, rounded and clipped."""
    gen = torch.Generator().manual_seed(seed)
    noisy = videos.float() + std * torch.randn(videos.shape, generator=gen)
    return noisy.round().clamp(0, 255).to(torch.uint8)


def write_frame_folders(folder: Path, videos: torch.Tensor) -> Path:
    """Each uint8 video [C, T, H, W] as `folder/clip<i>/<t>.png` (lossless)."""
    for i, video in enumerate(videos):
        clip = folder / f"clip{i}"
        clip.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(rearrange(video, "c t h w -> t h w c").numpy()):
            Image.fromarray(frame).save(clip / f"{t:03d}.png")
    return folder


def random_i3d_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values under the exact `i3d_pretrained_400.pt` keys and shapes (He-scaled convs)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in InceptionI3d().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith("weight") and value.ndim == 5:
            std = (2.0 / value[0].numel()) ** 0.5
            state[key] = torch.randn(value.shape, generator=gen) * std
        else:
            base = 1.0 if key.endswith("bn.weight") else 0.0
            state[key] = torch.randn(value.shape, generator=gen) * 0.1 + base
    return state


def pooled_features(videos: torch.Tensor, dim: int = 24, seed: int = 0) -> torch.Tensor:
    """A cheap deterministic detector: 4x4x4 average pooling and a fixed random projection."""
    x = F.adaptive_avg_pool3d(videos.float() / 255.0, 4).flatten(1)  # [B, 3 * 64]
    proj = torch.randn(x.shape[1], dim, generator=torch.Generator().manual_seed(seed))
    return x @ proj


def stand_in_detector(kind: str = "fvd", tag: str = "a") -> Detector:
    """A `Detector` with cheap features (fvd) or class probabilities (isv); hash from `tag`."""
    sha = hashlib.sha256(tag.encode()).hexdigest()
    if kind == "fvd":
        return Detector(f"stand-in-{tag}", sha, pooled_features)
    return Detector(
        f"stand-in-{tag}",
        sha,
        lambda v: torch.softmax(4.0 * pooled_features(v, dim=101, seed=1), dim=1),
    )


class ShiftAutoencoder(torch.nn.Module):
    """Moves every value by 0.1 towards zero's side that stays in range: PSNR 26.0206 dB."""

    def __init__(self, frames: int = 8, resolution: int = 32) -> None:
        super().__init__()
        self.config = SimpleNamespace(frames=frames, resolution=resolution)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2] == self.config.frames
        self.calls += 1
        return torch.where(x > -0.9, x - 0.1, x + 0.1)


SHIFT_PSNR = -10.0 * np.log10(0.05**2)  # |x - x_hat| = 0.1 on [-1, 1] is 0.05 on [0, 1]
