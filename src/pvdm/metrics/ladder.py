"""The FVD quality ladder: one reference set, and the FVD of every rung against it.

A model's FVD is read against rungs measured with the same detector, reference clips and seeds:
the floor (real clips disjoint from the reference), the autoencoder's reconstructions (rFVD),
generated clips, and trivial baselines (below: a frozen real frame, time-shuffled real frames,
noise). `window_fvds` is the drift curve of long videos: the FVD of each 16-frame window against
the same reference, so quality loss with length shows as a rise. Covariances use ddof 0, as the
protocols do (StyleGAN-V). Used by `pvdm demo` and `benchmarks/quality.py`.

The baselines give an FVD its scale: a number such as "FVD 480" means little alone. The same
detector and reference set applied to real clips that are blurred, noised, frozen (first frame
repeated) or shuffled in time, to a frozen real frame and to pure noise, bracket it: a model
should land between the floor (real vs disjoint real) and the trivial baselines. The baseline
functions take and return uint8 videos [B, C, T, H, W] and are deterministic given their `seed`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from pvdm.metrics.stats import frechet_distance, kernel_distance
from pvdm.runtime import generator

Extract = Callable[[torch.Tensor], torch.Tensor]  # uint8 videos [B, C, T, H, W] -> rows [B, D]

# Below this many clips per set, FVD (the Frechet distance of 400-d I3D features, whose
# covariances then have rank below the clip count) is dominated by its small-sample bias and
# does not rank sets reliably: a report shows the kernel distance (KID) instead.
FVD_MIN_CLIPS = 64

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


def window_kids(
    reference: torch.Tensor, extract: Extract, videos: torch.Tensor, window: int = 16
) -> list[float]:
    """The drift curve in kernel distance (x 1000): for a few long videos, where FVD is noise."""
    return [1000 * kernel_distance(reference, extract(w))[0] for w in windows(videos, window)]


def fvd_ladder(
    reference: torch.Tensor, extract: Extract, rungs: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, Any]]:
    """FVD and kernel distance (KID x 1000, with its spread over half-size subsets) of every
    rung's videos against the reference features, with the count of each. Below
    `FVD_MIN_CLIPS` clips read KID: it has no small-sample bias, FVD does."""
    out = {}
    for name, videos in rungs.items():
        feats = extract(videos)
        kid, spread = kernel_distance(reference, feats)
        out[name] = {
            "fvd": frechet_distance(reference, feats, ddof=0),
            "kid_x1000": 1000 * kid,
            "kid_x1000_spread": 1000 * spread,
            "num": int(feats.shape[0]),
        }
    return out


def split_frames(videos: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, C, k*frames, H, W] -> [B*k, C, frames, H, W], e.g. to reconstruct 16 frames in 8s."""
    return rearrange(videos, "b c (k t) h w -> (b k) c t h w", t=frames)


def join_frames(videos: torch.Tensor, num_videos: int) -> torch.Tensor:
    """The inverse of `split_frames`: [B*k, C, T, H, W] -> [B, C, k*T, H, W]."""
    return rearrange(videos, "(b k) c t h w -> b c (k t) h w", b=num_videos)


# --- the baselines: degraded real clips and trivial fakes ------------------------------


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
    noise = torch.randn(videos.shape, generator=generator(seed)) * std
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
    gen = generator(seed)
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
    return torch.randint(0, 256, shape, generator=generator(seed), dtype=torch.uint8)


def reference_features(
    detector: Any, data: Any, num: int, seed: int, cache: Any = None, per_video: int = 1
) -> tuple[torch.Tensor, int]:
    """Detector features of the reference set (`num` real 16-frame train clips of `data`, a
    `pvdm.data.DataConfig`, one per video at offsets seeded by `seed`, up to `per_video` per
    video when the split has fewer than `num` videos) and its size; kept in the
    file `cache` and reused while the detector, the data (its identity, digests of the video
    bytes included, as `pvdm eval`'s cache), the count and the seed are the same. An unreadable
    cache file is measured again and replaced."""
    import dataclasses
    import logging
    from pathlib import Path

    from pvdm.atomic import atomic_path
    from pvdm.data import open_dataset, split_clips
    from pvdm.metrics.sources import dataset_identity

    train = dataclasses.replace(data, split="train")
    key = {
        "detector": json.dumps(detector.describe(), sort_keys=True),
        "data": dataset_identity(train, open_dataset(train, clip_frames=16)),
        "resolution": data.resolution,
        "num": num,
        "seed": seed,
    }
    if per_video != 1:
        key["per_video"] = per_video
    path = Path(cache) if cache is not None else None
    if path is not None and path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
        except Exception as e:  # truncated or not ours: measured again and replaced
            logging.getLogger(__name__).warning("ignoring unreadable %s (%s)", path, e)
            saved = None
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["features"], int(saved["clips"])
    reference, _ = split_clips(
        data, "train", num, seed, clip_frames=16, purpose="the reference", per_video=per_video
    )
    features = detector(reference)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"key": key, "features": features, "clips": reference.shape[0]}, tmp)
    return features, int(reference.shape[0])
