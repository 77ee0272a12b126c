"""Degraded real clips and trivial fakes: the rungs that give an FVD its scale.

A number such as "FVD 480" means little alone. The same detector and reference set applied to
real clips that are blurred, noised, frozen (first frame repeated) or shuffled in time, to a
frozen real frame and to pure noise, bracket it: a model should land between the floor (real
vs disjoint real) and the trivial baselines. All functions take and return uint8 videos
[B, C, T, H, W] and are deterministic given their `seed`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blur(videos: torch.Tensor, sigma: float) -> torch.Tensor:
    """Every frame blurred by a Gaussian of `sigma` pixels (separable, reflect-padded)."""
    if sigma <= 0:
        return videos
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    b, c = videos.shape[:2]
    frames = rearrange(videos.float(), "b c t h w -> (b t c) 1 h w")
    frames = F.pad(frames, (radius, radius, radius, radius), mode="reflect")
    frames = F.conv2d(frames, kernel.view(1, 1, 1, -1))
    frames = F.conv2d(frames, kernel.view(1, 1, -1, 1))
    out = rearrange(frames, "(b t c) 1 h w -> b c t h w", b=b, c=c)
    return out.round().clamp(0, 255).to(torch.uint8)


def add_noise(videos: torch.Tensor, std: float, *, seed: int = 0) -> torch.Tensor:
    """Videos plus i.i.d. Gaussian noise of `std` (in 0..255 units), clipped."""
    noise = torch.randn(videos.shape, generator=_generator(seed)) * std
    return (videos.float() + noise).round().clamp(0, 255).to(torch.uint8)


def freeze(videos: torch.Tensor, num_moving: int = 1) -> torch.Tensor:
    """The first `num_moving` frames kept, every later frame a copy of the last of them.

    `num_moving=1` is the "frozen real frame" baseline (the first frame repeated); `num_moving`
    equal to the clip length returns the clips unchanged.
    """
    t = videos.shape[2]
    keep = max(1, min(num_moving, t))
    index = torch.arange(t).clamp(max=keep - 1)
    return videos[:, :, index]


def shuffle_time(videos: torch.Tensor, fraction: float = 1.0, *, seed: int = 0) -> torch.Tensor:
    """Frames permuted in time: a random `fraction` of the positions of each clip exchanged.

    `fraction=1` is a full random permutation per clip (the "time-shuffled real frames"
    baseline); 0 returns the clips unchanged.
    """
    b, _, t = videos.shape[:3]
    gen = _generator(seed)
    out = videos.clone()
    num = round(fraction * t)
    if num < 2:
        return out
    for i in range(b):
        positions = torch.randperm(t, generator=gen)[:num]
        order = torch.arange(t)
        order[positions] = positions[torch.randperm(num, generator=gen)]
        out[i] = videos[i][:, order]
    return out


def noise_videos(shape: tuple[int, ...], *, seed: int = 0) -> torch.Tensor:
    """Uniform random uint8 videos of `shape` (the "noise" baseline)."""
    return torch.randint(0, 256, shape, generator=_generator(seed), dtype=torch.uint8)
