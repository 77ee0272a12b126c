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
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange

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
