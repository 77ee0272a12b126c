"""LPIPS perceptual distance (Zhang et al. 2018), the VGG16 "vgg_lpips" variant of the official loss.

The official PVDM autoencoder loss (`losses/lpips.py`, from taming-transformers) uses: inputs in
[-1, 1], a scaling layer (x - shift) / scale with shift (-.030, -.088, -.188) and scale
(.458, .448, .450), VGG16 features after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, each
unit-normalised over channels (x / (||x|| + 1e-10)), squared differences weighted by the LPIPS
v0.1 1x1 linear heads (no bias), averaged over space and summed over the five layers. The
network is frozen and in eval mode (the heads' dropout is off); gradients still flow to the
inputs, which is how the autoencoder uses it as a loss.

Under autocast the backbone runs in the low-precision dtype while the normalisation and the
heads run in float32, where the small squared differences keep their precision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from pvdm.errors import CheckpointError, WeightsError
from pvdm.models.vgg import VGG16_CHANNELS, VGG16Features, load_vgg16_features
from pvdm.weights import resolve_weights

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


def normalize_channels(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """x / (||x||_2 over channels + eps), per pixel: LPIPS's unit normalisation."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """`forward(x, y)` -> distances [N] between images [N, 3, H, W] in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.net = VGG16Features()
        # One 1x1 head per tap, stored as [C] channel weights: lin{i}.model.1.weight[0, :, 0, 0].
        self.heads = nn.ParameterList(nn.Parameter(torch.ones(c)) for c in VGG16_CHANNELS)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        """LPIPS stays in eval mode (frozen statistics, no dropout) whatever the parent does."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            # As a loss: separate passes, so no backward work is spent on the target's half.
            taps = zip(
                self.net((x - self.shift) / self.scale), self.net((y - self.shift) / self.scale)
            )
        else:  # as a metric: one batch through the backbone
            both = self.net((torch.cat([x, y]) - self.shift) / self.scale)
            taps = ((f[:n], f[n:]) for f in both)
        total = torch.zeros(n, dtype=torch.float32, device=x.device)
        for (fx, fy), w in zip(taps, self.heads):
            diff = (normalize_channels(fx.float()) - normalize_channels(fy.float())) ** 2
            # The 1x1 head, then the spatial mean.
            total = total + torch.einsum("nchw,c->n", diff, w.float()) / (
                diff.shape[2] * diff.shape[3]
            )
        return total

    @classmethod
    def from_state_dicts(
        cls, vgg_state: Mapping[str, torch.Tensor], lin_state: Mapping[str, torch.Tensor]
    ) -> LPIPS:
        """Build from a torchvision VGG16 state dict and an LPIPS `lin{i}.model.1.weight` dict."""
        model = cls()
        load_vgg16_features(model.net, vgg_state)
        with torch.no_grad():
            for i, (head, c) in enumerate(zip(model.heads, VGG16_CHANNELS)):
                key = f"lin{i}.model.1.weight"
                w = lin_state.get(key)
                if w is None or tuple(w.shape) != (1, c, 1, 1):
                    got = None if w is None else tuple(w.shape)
                    raise CheckpointError(
                        f"not an LPIPS VGG linear-head file: '{key}' should be (1, {c}, 1, 1), "
                        f"got {got}"
                    )
                head.copy_(w.reshape(c))
        return model

    @classmethod
    def from_files(
        cls,
        vgg_path: str | os.PathLike = "vgg16",
        lin_path: str | os.PathLike = "lpips_vgg",
        *,
        device: str | torch.device = "cpu",
    ) -> LPIPS:
        """Build from weight files (paths or `pvdm.weights` names, downloaded when possible)."""
        states = []
        for what in (vgg_path, lin_path):
            path = resolve_weights(what)
            try:
                states.append(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as e:
                raise WeightsError(f"cannot read LPIPS weights file {path}: {e}") from e
        return cls.from_state_dicts(*states).to(device)
