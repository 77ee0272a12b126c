"""C3D fine-tuned on UCF-101: the classifier of the video Inception Score (TGAN, TGANv2, StyleGAN-V).

Reproduces TGANv2's `C3DVersion1UCF101` (pfnet-research/tgan2, tgan2/models/c3d/c3d_ucf101.py)
and loads its weights file `conv3d_deepnetA_ucf.npz` (Chainer keys `<layer>/W`, `<layer>/b`)
and input mean `mean2.npz`. Preprocessing, in TGANv2's order:
1. videos in [-1, 1] (RGB) are mapped to BGR and multiplied by 128 (its fixed 1x1x1 conv);
2. every frame is resized to 112x112, bilinear with align_corners=True (Chainer's
   `F.resize_images` default);
3. `128 - mean[:, :, 8:120, 8:120]` is added: the net sees BGR in about [0, 256] minus the
   mean clip. TGANv2 crops the (3, 16, 128, 171) mean at rows and columns 8..119, not at the
   horizontal centre; we use that crop, since the weights were evaluated with it.
Max pooling rounds output sizes up (Chainer's cover_all), so pool5 maps 7x7 to 4x4 and fc6 sees
512*1*4*4 = 8192 inputs. Inputs must have 16 frames (the mean clip has 16).

The Inception Score of the C3D probabilities (`inception_score`, Salimans et al. 2016):
IS = exp(E_x[KL(p(y|x) || p(y))]), computed per split with p(y) the split's mean prediction,
reported as the mean and (population) standard deviation over the splits. StyleGAN-V's
`isv2048_ucf` shuffles the 2,048 C3D predictions with NumPy seed 42 before splitting them in 10;
`shuffle_seed=None` keeps the given order (TGANv2's code). 0 * log 0 is taken as 0, so exact
one-hot predictions are fine (TGANv2 adds 1e-20 instead; the difference is below 1e-15).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pvdm.errors import CheckpointError
from pvdm.runtime import full_fp32_convs, module_device
from pvdm.weights import resolve_weights

C3D_FRAMES = 16
C3D_RESOLUTION = 112
NUM_UCF101_CLASSES = 101
MEAN_CROP = (slice(8, 8 + C3D_RESOLUTION), slice(8, 8 + C3D_RESOLUTION))
CONVS = {
    "conv1a": (3, 64),
    "conv2a": (64, 128),
    "conv3a": (128, 256),
    "conv3b": (256, 256),
    "conv4a": (256, 512),
    "conv4b": (512, 512),
    "conv5a": (512, 512),
    "conv5b": (512, 512),
}
FCS = {"fc6": (8192, 4096), "fc7": (4096, 4096), "fc8": (4096, NUM_UCF101_CLASSES)}
_POOL_AFTER = {"conv1a": (1, 2, 2), "conv2a": 2, "conv3b": 2, "conv4b": 2, "conv5b": 2}


class C3D(nn.Module):
    """TGANv2's UCF-101 C3D; `forward` maps [B, 3, 16, H, W] in [-1, 1] (RGB) to fc8 logits."""

    def __init__(self) -> None:
        super().__init__()
        for name, (c_in, c_out) in CONVS.items():
            self.add_module(name, nn.Conv3d(c_in, c_out, 3, padding=1))
        for name, (n_in, n_out) in FCS.items():
            self.add_module(name, nn.Linear(n_in, n_out))
        # 128 - (mean clip cropped to 112x112), BGR: added after the resize, as in TGANv2.
        self.register_buffer("input_offset", torch.zeros(3, C3D_FRAMES, 112, 112))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, 16, H, W] in [-1, 1] RGB -> the network input [B, 3, 16, 112, 112] (BGR)."""
        if x.shape[1:3] != (3, C3D_FRAMES):
            raise ValueError(f"C3D takes [B, 3, 16, H, W] videos, got {tuple(x.shape)}")
        b = x.shape[0]
        x = x.flip(1) * 128.0  # RGB -> BGR on a 0..256-like scale (before the mean)
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = F.interpolate(x, size=(C3D_RESOLUTION,) * 2, mode="bilinear", align_corners=True)
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b)  # [B, 3, 16, 112, 112]
        return x + self.input_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        for name in CONVS:
            x = F.relu(getattr(self, name)(x))
            if name in _POOL_AFTER:
                k = _POOL_AFTER[name]
                x = F.max_pool3d(x, k, k, ceil_mode=True)
        x = x.flatten(1)  # [B, 512 * 1 * 4 * 4]
        x = F.relu(self.fc6(x))  # dropout layers are identity at evaluation
        x = F.relu(self.fc7(x))
        return self.fc8(x)


def c3d_state_from_npz(arrays: Mapping[str, np.ndarray], mean: np.ndarray) -> dict:
    """Our state dict from TGANv2's npz arrays (`conv1a/W`, ...) and the (3, 16, 128, 171) mean."""
    state = {}
    for name in [*CONVS, *FCS]:
        for src, dst in (("W", "weight"), ("b", "bias")):
            key = f"{name}/{src}"
            if key not in arrays:
                raise CheckpointError(
                    f"not a TGANv2 C3D weights file (conv3d_deepnetA_ucf.npz): missing '{key}'"
                )
            state[f"{name}.{dst}"] = torch.from_numpy(np.asarray(arrays[key], np.float32))
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim != 4 or mean.shape[:2] != (3, C3D_FRAMES) or min(mean.shape[2:]) < 120:
        raise CheckpointError(f"C3D mean must be (3, 16, 128, 171)-like, got {mean.shape}")
    crop = mean[:, :, MEAN_CROP[0], MEAN_CROP[1]]
    state["input_offset"] = torch.from_numpy((128.0 - crop).astype(np.float32))
    return state


def load_c3d(
    weights: str | os.PathLike = "c3d_ucf101",
    mean: str | os.PathLike = "c3d_mean",
    *,
    device: str | torch.device = "cpu",
) -> C3D:
    """The UCF-101 C3D in eval mode from TGANv2's npz files (paths or known weights names)."""
    weights_path, mean_path = resolve_weights(weights), resolve_weights(mean)
    try:
        with np.load(weights_path, allow_pickle=False) as w, np.load(mean_path) as m:
            state = c3d_state_from_npz(dict(w), m["mean"])
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read C3D files {weights_path}, {mean_path}: {e}") from e
    model = C3D()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{weights_path} does not fit TGANv2's C3D: {e}") from e
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def c3d_probs(
    c3d: nn.Module,
    videos: torch.Tensor,
    *,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """UCF-101 class probabilities [B, 101] (float32) of uint8 videos [B, 3, 16, H, W]."""
    if videos.dtype != torch.uint8 or videos.ndim != 5:
        raise ValueError(
            f"expected uint8 videos [B, C, T, H, W], got {videos.dtype} {tuple(videos.shape)}"
        )
    device = module_device(c3d)
    out = []
    for chunk in videos.split(batch_size or videos.shape[0]):
        x = chunk.to(device).float() / 127.5 - 1.0
        amp = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else full_fp32_convs(device)
        )
        with amp:
            logits = c3d(x)
        out.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(out)


# --- the Inception Score -------------------------------------------------------------------


def inception_score(
    probs: torch.Tensor | np.ndarray, num_splits: int = 10, shuffle_seed: int | None = 42
) -> tuple[float, float]:
    """(mean, std) of the Inception Score over `num_splits` splits of probabilities [N, K]."""
    p = probs.detach().cpu().double().numpy() if torch.is_tensor(probs) else np.array(probs)
    p = p.astype(np.float64)
    if p.ndim != 2 or p.shape[0] < num_splits:
        raise ValueError(
            f"need a [N, K] probability matrix with N >= {num_splits}, got shape {p.shape}"
        )
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(p)
    n = p.shape[0]
    scores = []
    for i in range(num_splits):
        part = p[i * n // num_splits : (i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
