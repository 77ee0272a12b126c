"""Evaluation metrics: FVD (I3D), video Inception Score (C3D), PSNR, SSIM and LPIPS.

Metric inputs are uint8 videos [B, C, T, H, W] (reconstruction metrics also take float videos in
[-1, 1]). Features are accumulated with `FeatureStats` (float64, reduced across ranks) and
compared with `frechet_distance`; protocols (`fvd2048_16f`, ...) are in `pvdm.metrics.protocols`.
"""

from pvdm.metrics.c3d import c3d_probs, load_c3d
from pvdm.metrics.frechet import frechet_distance, trace_sqrt_product
from pvdm.metrics.fvd import i3d_features, load_i3d
from pvdm.metrics.inception_score import inception_score
from pvdm.metrics.protocols import PROTOCOLS, Protocol, get_protocol
from pvdm.metrics.recon import lpips_video, psnr, psnr_uint8, ssim, ssim_uint8
from pvdm.metrics.stats import FeatureStats, accumulate_features, gather_rows

__all__ = [
    "PROTOCOLS",
    "FeatureStats",
    "Protocol",
    "accumulate_features",
    "c3d_probs",
    "frechet_distance",
    "gather_rows",
    "get_protocol",
    "i3d_features",
    "inception_score",
    "load_c3d",
    "load_i3d",
    "lpips_video",
    "psnr",
    "psnr_uint8",
    "ssim",
    "ssim_uint8",
    "trace_sqrt_product",
]
