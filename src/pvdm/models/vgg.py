"""VGG16 convolutional features (Simonyan & Zisserman 2015): the LPIPS backbone.

Layer indices follow torchvision's `vgg16().features`, so torchvision's ImageNet weights file
(`vgg16-397923af.pth`, keys `features.N.weight/bias`) loads directly; its classifier is not
needed and its keys are ignored. The network stops at relu5_3 (index 29).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pvdm.errors import CheckpointError

# Conv output channels per stage; a 2x2 max pool separates the stages.
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
# Indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the LPIPS taps.
VGG16_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
VGG16_CHANNELS: tuple[int, ...] = tuple(stage[-1] for stage in VGG16_STAGES)


class VGG16Features(nn.Module):
    """`forward` returns the relu1_2 ... relu5_3 activations of images [N, 3, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, stage in enumerate(VGG16_STAGES):
            if i > 0:
                layers.append(nn.MaxPool2d(2, 2))
            for c_out in stage:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = c_out
        self.features = nn.Sequential(*layers)  # indices 0..29, as in torchvision

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                taps.append(x)
        return taps


def load_vgg16_features(model: VGG16Features, state: Mapping[str, torch.Tensor]) -> None:
    """Load the `features.*` tensors of a torchvision VGG16 state dict (classifier ignored)."""
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(feats))
    extra = sorted(set(feats) - set(expected))
    bad = sorted(k for k in set(expected) & set(feats) if feats[k].shape != expected[k].shape)
    if missing or extra or bad:
        raise CheckpointError(
            "not a torchvision VGG16 state dict (vgg16-397923af.pth format): "
            f"missing {missing[:3]}, unexpected {extra[:3]}, mis-shaped {bad[:3]}"
        )
    model.load_state_dict(feats)
