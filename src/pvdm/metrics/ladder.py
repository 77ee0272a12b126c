"""The FVD quality ladder: one reference set, and the FVD of every rung against it.

A model's FVD is read against rungs measured with the same detector, reference clips and seeds:
the floor (real clips disjoint from the reference), the autoencoder's reconstructions (rFVD),
generated clips, and trivial baselines (`pvdm.metrics.baselines`: a frozen real frame,
time-shuffled real frames, noise). `window_fvds` is the drift curve of long videos: the FVD of
each 16-frame window against the same reference, so quality loss with length shows as a rise.
Covariances use ddof 0, as the protocols do (StyleGAN-V). Used by `pvdm demo` and
`benchmarks/quality.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from einops import rearrange

from pvdm.metrics.baselines import freeze, noise_videos, shuffle_time
from pvdm.metrics.stats import frechet_distance

Extract = Callable[[torch.Tensor], torch.Tensor]  # uint8 videos [B, C, T, H, W] -> rows [B, D]

FLOOR = "real vs disjoint real (floor)"
FROZEN = "frozen real frame"
SHUFFLED = "time-shuffled real frames"
NOISE = "uniform noise"


def baseline_videos(real: torch.Tensor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The trivial baselines made from held-out real clips [B, C, T, H, W] (uint8)."""
    return {
        FROZEN: freeze(real, 1),
        SHUFFLED: shuffle_time(real, 1.0, seed=seed),
        NOISE: noise_videos(tuple(real.shape), seed=seed),
    }


def windows(videos: torch.Tensor, window: int = 16) -> list[torch.Tensor]:
    """Non-overlapping `window`-frame windows of videos [B, C, T, H, W], in time order."""
    num = videos.shape[2] // window
    return [videos[:, :, i * window : (i + 1) * window] for i in range(num)]


def window_fvds(
    reference: torch.Tensor, extract: Extract, videos: torch.Tensor, window: int = 16
) -> list[float]:
    """The drift curve: FVD of each `window`-frame window of long videos against `reference`.

    `reference` holds the detector features of real `window`-frame clips [N, D].
    """
    return [frechet_distance(reference, extract(w), ddof=0) for w in windows(videos, window)]


def fvd_ladder(
    reference: torch.Tensor, extract: Extract, rungs: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, Any]]:
    """FVD of every rung's videos against the reference features, with the count of each."""
    out = {}
    for name, videos in rungs.items():
        feats = extract(videos)
        out[name] = {"fvd": frechet_distance(reference, feats, ddof=0), "num": int(feats.shape[0])}
    return out


def split_frames(videos: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, C, k*frames, H, W] -> [B*k, C, frames, H, W], e.g. to reconstruct 16 frames in 8s."""
    return rearrange(videos, "b c (k t) h w -> (b k) c t h w", t=frames)


def join_frames(videos: torch.Tensor, num_videos: int) -> torch.Tensor:
    """The inverse of `split_frames`: [B*k, C, T, H, W] -> [B, C, k*T, H, W]."""
    return rearrange(videos, "(b k) c t h w -> b c (k t) h w", b=num_videos)
