"""Running a reconstruction protocol (`recon2048_16f`): the autoencoder on real clips.

The official trainer measures its autoencoder with `test_psnr` (PSNR per video on [0, 1],
averaged) and `test_ifvd` (FVD between real clips and their reconstructions, rFVD), on its
loader's clips. Here the clips follow the protocol (one per video of the split at a seeded
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
from typing import Any

import torch

from pvdm.data import DataConfig, from_model_range, to_model_range
from pvdm.errors import ConfigError
from pvdm.metrics.detectors import Detector
from pvdm.metrics.protocols import Protocol
from pvdm.metrics.recon import lpips_video, psnr, ssim
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
from pvdm.runtime import all_reduce_sum, module_device, rank_and_world

log = logging.getLogger(__name__)


@torch.no_grad()
def reconstruct(autoencoder: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """uint8 clips [B, C, T, H, W] -> reconstructions in [-1, 1], float32 on the model's device.

    Clips longer than the autoencoder's `config.frames` go through it in consecutive chunks of
    that length (which must divide the clip length).
    """
    n = int(autoencoder.config.frames)
    t = clips.shape[2]
    if t % n:
        raise ConfigError(
            f"clips of {t} frames cannot be cut into the autoencoder's {n}-frame chunks"
        )
    x = to_model_range(clips.to(module_device(autoencoder)))
    pieces = [autoencoder(x[:, :, k : k + n]).float() for k in range(0, t, n)]
    return torch.cat(pieces, dim=2).clamp(-1, 1)


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
