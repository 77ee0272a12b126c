"""FVD features: loading an I3D detector and turning uint8 videos into 400-d logits.

Two detector files are accepted, detected by content:
- `i3d_pretrained_400.pt`, the state dict used by the official PVDM / VideoGPT FVD code, run
  by our `InceptionI3d` with the official preprocessing (`evals/fvd/fvd.py`): scale to [0, 1],
  resize the shorter side to 224 (bilinear, align_corners=False; the longer side rounded up),
  centre-crop 224x224, map to [-1, 1]; features are the time-averaged logits.
- StyleGAN-V's TorchScript `i3d_torchscript.pt`, called as StyleGAN-V does:
  `detector(videos_uint8, rescale=True, resize=True, return_features=True)`; it rescales and
  resizes to 224x224 with its own code, which for square videos matches the official
  preprocessing and for non-square ones need not (it has no centre crop that we know of).
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pvdm.errors import CheckpointError
from pvdm.metrics.device import full_fp32_convs, module_device
from pvdm.metrics.i3d import InceptionI3d, load_i3d_state_dict
from pvdm.weights import resolve_weights

I3D_RESOLUTION = 224


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D behind the same call as ours: uint8 videos in, logits out."""

    def __init__(self, detector: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.detector(videos, rescale=True, resize=True, return_features=True)


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """True for a `torch.jit.save` archive (it holds code/ and constants.pkl), not a state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read I3D weights {path}: {e}") from e
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not an I3D state dict")
    return state


def load_i3d(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor] = "i3d_pretrained_400",
    *,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """An I3D detector in eval mode from a state dict, a file path or a known weights name.

    Files may be the `i3d_pretrained_400.pt` state dict (or a safetensors copy) or StyleGAN-V's
    TorchScript `i3d_torchscript.pt`; names are resolved by `pvdm.weights.resolve_weights`.
    """
    if isinstance(path_or_state_dict, Mapping):
        model: nn.Module = InceptionI3d()
        load_i3d_state_dict(model, path_or_state_dict)
    else:
        path = resolve_weights(path_or_state_dict)
        if is_torchscript_file(path):
            with warnings.catch_warnings():
                # TorchScript is deprecated in recent torch, but it is the format this file
                # is published in; there is nothing the user can do about the warning.
                warnings.simplefilter("ignore", DeprecationWarning)
                model = TorchScriptI3D(torch.jit.load(str(path), map_location="cpu"))
        else:
            model = InceptionI3d()
            load_i3d_state_dict(model, _read_state_dict(path))
    return model.eval().requires_grad_(False).to(device)


def preprocess_i3d(videos: torch.Tensor, resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """uint8 [B, C, T, H, W] -> float [B, C, T, res, res] in [-1, 1] (official FVD preprocessing)."""
    b, _, _, h, w = videos.shape
    x = rearrange(videos, "b c t h w -> (b t) c h w").float() / 255.0
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[:, :, top : top + resolution, left : left + resolution]
    x = rearrange(x, "(b t) c h w -> b c t h w", b=b)  # [B, C, T, res, res]
    return (x - 0.5) * 2.0


def _check_videos(videos: torch.Tensor) -> torch.Tensor:
    if videos.dtype != torch.uint8 or videos.ndim != 5:
        raise ValueError(
            f"expected uint8 videos [B, C, T, H, W], got {videos.dtype} {tuple(videos.shape)}"
        )
    if videos.shape[1] == 1:  # grayscale: the detectors take RGB
        videos = videos.expand(-1, 3, -1, -1, -1)
    if videos.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {videos.shape[1]}")
    return videos


@torch.no_grad()
def i3d_features(
    i3d: nn.Module,
    videos: torch.Tensor,
    *,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """FVD features of uint8 videos [B, C, T, H, W] (T >= 9): float32 logits [B, 400].

    Runs on the detector's device in chunks of `batch_size` videos, in full float32 (TF32
    off). `autocast_dtype` (e.g. torch.bfloat16) runs the network under autocast instead: faster
    on GPUs (slower on CPUs without bf16 hardware) but not the reference arithmetic; use float32
    for reported numbers.
    """
    videos = _check_videos(videos)
    device = module_device(i3d)
    scripted = isinstance(i3d, TorchScriptI3D | torch.jit.ScriptModule)
    out = []
    for chunk in videos.split(batch_size or videos.shape[0]):
        chunk = chunk.to(device, non_blocking=True)
        x = chunk if scripted else preprocess_i3d(chunk)
        amp = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else full_fp32_convs(device)
        )
        with amp:
            if isinstance(i3d, torch.jit.ScriptModule):
                y = i3d(x, rescale=True, resize=True, return_features=True)
            else:
                y = i3d(x)
        out.append(y.float())
    return torch.cat(out)
