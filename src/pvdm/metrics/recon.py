"""Reconstruction metrics of the autoencoder: PSNR, SSIM and LPIPS on videos [B, C, T, H, W].

- PSNR is the official PVDM formula (`tools/trainer.py` test_psnr): per video,
  mse = mean(((x - x_hat) / 2)^2) over all pixels of videos in [-1, 1] (the [0, 1] scale),
  PSNR = -10 log10(mse); averaged over videos. Identical videos give +inf, as officially.
- SSIM is Wang et al. (2004): Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03, valid region
  only (no padding), per frame and channel on [0, 1] (data range 1; the uint8 entry point uses
  [0, 255] with data range 255, the same value), averaged over channels, frames, then videos.
- LPIPS per frame (official VGG variant, `pvdm.models.lpips`), averaged over frames.

Every function returns per-video values with `reduction="none"` (to average over a whole
dataset across batches and ranks) or their mean (default).

`evaluate_recon` runs the reconstruction protocol (`recon2048_16f`): the autoencoder on real
clips. The official trainer measures its autoencoder with `test_psnr` (PSNR per video on
[0, 1], averaged) and `test_ifvd` (FVD between real clips and their reconstructions, rFVD), on
its loader's clips. Here the clips follow the protocol (one per video of the split at a seeded
offset, test split by default) and the numbers are reduced over ranks: PSNR, SSIM, LPIPS (when
an LPIPS model is given) and rFVD (when an I3D detector is given; the real side's statistics
are cached like FVD's). Reconstructions become uint8 the official way (clamp, truncation)
before I3D sees them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange

from pvdm.data import DataConfig, from_model_range, to_model_range
from pvdm.errors import ConfigError
from pvdm.metrics.protocols import Detector, Protocol
from pvdm.metrics.results import make_record
from pvdm.metrics.runner import (
    FRECHET_METHOD,
    lookup_reference,
    progress_batches,
    real_record,
    store_reference,
)
from pvdm.metrics.sources import RealClips
from pvdm.metrics.stats import FeatureStats, frechet_distance
from pvdm.runtime import all_reduce_sum, autocast, module_device, rank_and_world

log = logging.getLogger(__name__)

Reduction = Literal["mean", "none"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _reduce(per_video: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return per_video
    if reduction == "mean":
        return per_video.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _check_pair(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(
            f"expected two videos [B, C, T, H, W] of one shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if dtype is not None and (x.dtype != dtype or y.dtype != dtype):
        raise ValueError(f"expected {dtype} videos, got {x.dtype} and {y.dtype}")


def psnr(x: torch.Tensor, x_hat: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (float64): per video, or the mean over videos."""
    _check_pair(x, x_hat)
    diff = (x.double() - x_hat.double()) / 2.0
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return _reduce(-10.0 * torch.log10(mse), reduction)


def psnr_uint8(a: torch.Tensor, b: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """PSNR in dB of uint8 videos, the same value as `psnr` on their [-1, 1] versions."""
    _check_pair(a, b, torch.uint8)
    diff = (a.double() - b.double()) / 255.0
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return _reduce(-10.0 * torch.log10(mse), reduction)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian [size] whose outer product is SSIM's 2-D window."""
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_frames(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    # x, y: [N, C, H, W] -> SSIM per image [N] (mean over channels and valid positions).
    c = x.shape[1]
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    g = gaussian_window().to(x.device, x.dtype)
    wh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    ww = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region, per channel
        return F.conv2d(F.conv2d(z, wh, groups=c), ww, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)


def _ssim_videos(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    b = x.shape[0]
    frames = [rearrange(v, "b c t h w -> (b t) c h w") for v in (x, y)]
    per_frame = _ssim_frames(*frames, data_range)
    return rearrange(per_frame, "(b t) -> b t", b=b).mean(dim=1)


def ssim(x: torch.Tensor, x_hat: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """SSIM of videos in [-1, 1], computed on [0, 1] (float64): per video or the mean."""
    _check_pair(x, x_hat)
    to_unit = [(v.double() + 1.0) / 2.0 for v in (x, x_hat)]
    return _reduce(_ssim_videos(*to_unit, data_range=1.0), reduction)


def ssim_uint8(a: torch.Tensor, b: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """SSIM of uint8 videos on [0, 255] (data range 255): per video or the mean."""
    _check_pair(a, b, torch.uint8)
    return _reduce(_ssim_videos(a.double(), b.double(), data_range=255.0), reduction)


def lpips_video(
    model: torch.nn.Module,
    x: torch.Tensor,
    x_hat: torch.Tensor,
    reduction: Reduction = "mean",
    *,
    frames_per_batch: int | None = None,
) -> torch.Tensor:
    """LPIPS of videos in [-1, 1] (an `LPIPS` model): per-frame distances averaged per video."""
    _check_pair(x, x_hat)
    b = x.shape[0]
    frames = [rearrange(v, "b c t h w -> (b t) c h w") for v in (x, x_hat)]
    step = frames_per_batch or frames[0].shape[0]
    with torch.no_grad():
        per_frame = torch.cat(
            [model(fx, fy) for fx, fy in zip(frames[0].split(step), frames[1].split(step))]
        )
    return _reduce(rearrange(per_frame, "(b t) -> b t", b=b).mean(dim=1), reduction)


# --- the reconstruction protocol: the autoencoder on real clips --------------------------


@torch.no_grad()
def reconstruct(
    autoencoder: torch.nn.Module,
    clips: torch.Tensor,
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """uint8 clips [B, C, T, H, W] -> reconstructions in [-1, 1], float32 on the model's device.

    Clips longer than the autoencoder's `config.frames` go through it in consecutive chunks of
    that length (which must divide the clip length); `batch_size` clips at a time (None: all),
    under `precision`'s autocast. The model's train/eval mode is left as it was.
    """
    n = int(autoencoder.config.frames)
    t = clips.shape[2]
    if t % n:
        raise ConfigError(
            f"clips of {t} frames cannot be cut into the autoencoder's {n}-frame chunks"
        )
    device = module_device(autoencoder)
    was_training = autoencoder.training
    autoencoder.eval()
    out = []
    step = batch_size or max(len(clips), 1)
    for i in range(0, len(clips), step):
        x = to_model_range(clips[i : i + step].to(device))
        with autocast(precision, device):
            pieces = [autoencoder(x[:, :, k : k + n]).float() for k in range(0, t, n)]
        out.append(torch.cat(pieces, dim=2).clamp(-1, 1))
    autoencoder.train(was_training)
    return torch.cat(out)


def evaluate_recon(
    protocol: Protocol,
    *,
    autoencoder: torch.nn.Module,
    data: DataConfig,
    i3d: Detector | None = None,
    lpips: torch.nn.Module | None = None,
    autoencoder_record: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """PSNR, SSIM, LPIPS (with `lpips`) and rFVD (with `i3d`) of real clips vs reconstructions.

    Values are means over clips. Returns one record on rank 0, [] on the others; collective
    under torch.distributed (every rank calls it).
    """
    if protocol.kind != "recon":
        raise ValueError(f"evaluate_recon() runs recon protocols, not {protocol.name}")
    rank, world = rank_and_world()
    start = time.perf_counter()
    real = RealClips.open(data, protocol)
    cached = None
    if i3d is not None:
        cached = lookup_reference(protocol, real, i3d, cache_dir=cache_dir, use_cache=use_cache)
    real_acc, fake_acc = FeatureStats(), FeatureStats()
    sums = torch.zeros(4, dtype=torch.float64)  # PSNR, SSIM, LPIPS, clips
    batches = real.batches(batch_size, rank=rank, world_size=world, num_workers=num_workers)
    for videos, _ in progress_batches(batches, len(real), protocol.name, progress):
        x_hat = reconstruct(autoencoder, videos)
        x = to_model_range(videos.to(x_hat.device))
        sums[0] += psnr(x, x_hat, reduction="none").sum().cpu()
        sums[1] += ssim(x, x_hat, reduction="none").sum().cpu()
        if lpips is not None:
            sums[2] += lpips_video(lpips, x, x_hat, reduction="none").double().sum().cpu()
        sums[3] += videos.shape[0]
        if i3d is not None:
            fake_acc.update(i3d(from_model_range(x_hat)))
            if not cached.hit:
                real_acc.update(i3d(videos))
    all_reduce_sum(sums)
    real_stats = None
    if i3d is not None:
        fake_acc.all_reduce()
        real_stats = cached.stats
        if not cached.hit:
            real_stats = real_acc.all_reduce()
            store_reference(protocol, real, i3d, real_stats, cached.path)
    if rank != 0:
        return []

    count = int(sums[3].item())
    results = {"psnr": (sums[0] / count).item(), "ssim": (sums[1] / count).item()}
    skipped = {}
    if lpips is not None:
        results["lpips"] = (sums[2] / count).item()
    else:
        skipped["lpips"] = "no LPIPS weights given or cached"
    sections: dict[str, Any] = {}
    if i3d is not None:
        results["rfvd"] = frechet_distance(
            real_stats, fake_acc, ddof=protocol.cov_ddof, method=FRECHET_METHOD
        )
        sections["detector"] = i3d.describe()
        sections["frechet"] = {"method": FRECHET_METHOD, "cov_ddof": protocol.cov_ddof}
    else:
        skipped["rfvd"] = "no I3D weights given or cached"
    record = make_record(
        protocol,
        results,
        num_real=count,
        num_fake=count,
        total_time_sec=time.perf_counter() - start,
        world_size=world,
        autoencoder=dict(autoencoder_record or {}),
        real=real_record(protocol, real, count, cached),
        skipped=skipped,
        **sections,
    )
    return [record]
