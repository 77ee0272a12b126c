"""The demo's generation and evaluation stage: what the report shows.

Writes into `OUT/report_files/`: held-out clips next to their reconstructions, generated clips,
a long video (8 clips, each conditioned on the re-encoded previous one), and the continuation
of a held-out clip next to its real future. Returns the metrics for the report's table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from pvdm.data import (
    DataConfig,
    eval_clips,
    from_model_range,
    open_dataset,
    open_heldout,
    to_model_range,
    write_video,
)
from pvdm.errors import PvdmError

log = logging.getLogger(__name__)

NUM_CLIPS = 8
LONG_CLIPS = 8
SAMPLER = {"sampler": "ddim", "steps": 50, "eta": 1.0}


def _clips(data: DataConfig, split: str, num: int, frames: int, seed: int) -> torch.Tensor:
    if split == "test":
        dataset = open_heldout(data, clip_frames=frames, purpose="the demo's held-out clips")
    else:
        dataset = open_dataset(data, clip_frames=frames, split=split)
    return torch.cat([b["video"] for b in eval_clips(dataset, num, seed=seed)])


@torch.no_grad()
def evaluate_and_generate(
    out: Path, ae_run: Path, dm_run: Path, ae_cfg: Any, *, seed: int, i3d: str | None
) -> dict[str, Any]:
    """Generate the report's videos and compute its metrics."""
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.metrics.recon import psnr, ssim

    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    pipe = PVDMPipeline.from_pretrained(dm_run)
    frames = pipe.clip_frames
    metrics: dict[str, Any] = {"sampler": dict(SAMPLER)}
    timings: dict[str, float] = {}

    # reconstruction of held-out clips
    t0 = time.perf_counter()
    real = _clips(ae_cfg.data, "test", NUM_CLIPS, frames, seed)
    recon = from_model_range(pipe.autoencoder(to_model_range(real)))
    metrics["recon_psnr_db"] = float(psnr(to_model_range(real), to_model_range(recon)))
    metrics["recon_ssim"] = float(ssim(to_model_range(real), to_model_range(recon)))
    metrics["recon_clips"] = len(real)
    write_video(files / "reconstruction.gif", torch.cat([real, recon], dim=-1), fps=8)
    timings["reconstruction"] = time.perf_counter() - t0

    # short videos: 16 frames (two clips of the debug preset's 8)
    t0 = time.perf_counter()
    samples = pipe(NUM_CLIPS, max(16, frames), seed=seed, **SAMPLER, progress=True)
    write_video(files / "samples.gif", samples, fps=8)
    write_video(files / "samples.png", samples)
    timings["samples"] = time.perf_counter() - t0

    # a long video, clip by clip
    t0 = time.perf_counter()
    long = pipe(2, LONG_CLIPS * frames, seed=seed + 1000, **SAMPLER, progress=True)
    write_video(files / "long.gif", long, fps=8)
    write_video(files / "long.mp4", long, fps=8)
    write_video(files / "long.png", long, every=max(1, long.shape[2] // 16))
    metrics["long_video_frames"] = long.shape[2]
    timings["long_video"] = time.perf_counter() - t0

    # continuation of held-out clips: given clip, then the real future vs the generated one
    t0 = time.perf_counter()
    given_and_future = _clips(ae_cfg.data, "test", 2, 3 * frames, seed + 1)
    given = given_and_future[:, :, :frames]
    generated = pipe(2, 2 * frames, seed=seed + 2000, context=given, **SAMPLER, progress=True)
    real_video = given_and_future
    fake_video = torch.cat([given, generated], dim=2)
    write_video(files / "continuation.gif", torch.cat([real_video, fake_video], dim=-1), fps=8)
    metrics["continuation"] = {"given_frames": frames, "generated_frames": generated.shape[2]}
    timings["continuation"] = time.perf_counter() - t0

    real = _clips(ae_cfg.data, "train", 16, samples.shape[2], seed)
    fvd = _small_fvd(i3d, real_clips=real, fakes=samples)
    if fvd is not None:
        metrics["fvd_small"] = fvd
    metrics["generation_seconds"] = timings
    return metrics


def _small_fvd(i3d: str | None, real_clips: torch.Tensor, fakes: torch.Tensor) -> dict | None:
    """FVD of the demo's few samples, when I3D weights are given or cached (else skipped)."""
    from pvdm.metrics import frechet_distance
    from pvdm.metrics.fvd import i3d_features, load_i3d
    from pvdm.weights import resolve_weights

    path = i3d
    for name in [] if i3d else ["i3d_pretrained_400", "i3d_torchscript"]:
        try:  # only a file already in the cache: the demo never waits for a download
            path = str(resolve_weights(name, download=False))
            break
        except PvdmError:
            continue
    if path is None:
        log.info("FVD skipped: no I3D weights (pass --i3d FILE, see docs/evaluation.md)")
        return None
    detector = load_i3d(path)
    a = i3d_features(detector, real_clips)
    b = i3d_features(detector, fakes)
    return {"value": float(frechet_distance(a, b)), "num_real": len(a), "num_fake": len(b)}
