"""The official spatial transform and the uint8 <-> model-range maps.

Official `tools/data_utils.resize_crop` (reference §6.1, step 3): crop a centred square on the
shorter side (offset `(long - short) // 2`), then bilinear-resize the float 0..255 frames to the
target resolution with `align_corners=False` and no antialiasing. The official loader hands the
model those floats unrounded; we round to uint8 (datasets are uint8 everywhere), which moves a
value by at most 0.5, i.e. 0.004 in the model's [-1, 1] range.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def center_crop_resize(frames: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 frames `[T, H, W, 3]` -> uint8 `[3, T, resolution, resolution]`."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    _, height, width, _ = x.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = x[:, top : top + side, left : left + side]
    x = rearrange(x, "t h w c -> t c h w")  # interpolate wants channels before space
    if side != resolution:
        x = F.interpolate(
            x.float(),
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return rearrange(x, "t c h w -> c t h w").contiguous()


def to_model_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1] (`x / 127.5 - 1`, as the official trainer does)."""
    return video.float() / 127.5 - 1.0


def from_model_range(video: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8, as the official evaluation decodes samples.

    `((x.clamp(-1, 1) + 1) * 127.5)` cast to uint8 by truncation (not rounding), so a value maps
    to the integer at or below it; `from_model_range(to_model_range(u))` can therefore be
    `u - 1` where float error lands just below an integer.
    """
    return ((video.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
