"""Inflated Inception-v1 (I3D, Kinetics-400): the FVD feature network.

Architecture of Carreira & Zisserman (CVPR 2017) as ported from TF-Hub `i3d-kinetics-400/1` by
VideoGPT and used by the official PVDM FVD code (`evals/fvd/pytorch_i3d.py`). Module names equal
the keys of the released `i3d_pretrained_400.pt` state dict, so that file loads unchanged.

TensorFlow "SAME" padding is reproduced: the padding of every convolution and pooling layer is
computed from the input size at run time (asymmetric, the larger half at the end), because the
released weights were trained with it and symmetric padding would shift every feature map.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pvdm.errors import CheckpointError

# Output channels of the inception blocks: (branch 0, branch 1 reduce, branch 1, branch 2
# reduce, branch 2, branch 3 after pooling), in the TF-Hub network's order.
MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
NUM_CLASSES = 400


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding along one axis: (before, after), the extra pixel after."""
    total = max(kernel - (size % stride or stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
    # x: [B, C, T, H, W]; F.pad takes the last axis first.
    pads: list[int] = []
    for axis in (4, 3, 2):
        pads.extend(same_padding(x.shape[axis], kernel[axis - 2], stride[axis - 2]))
    return F.pad(x, pads) if any(pads) else x


class Unit3d(nn.Module):
    """Conv3d with SAME padding, then BatchNorm (no scale in the original) and ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        *,
        norm_act: bool = True,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.norm_act = kernel, stride, norm_act
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.norm_act:
            x = F.relu(self.bn(x))
        return x


class MaxPool3dSame(nn.Module):
    """Max pooling with SAME padding.

    The padding is zeros, as in the official port; every input is a ReLU output (>= 0), so this
    equals TF's pooling, which ignores padded positions.
    """

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """An inception block: 1x1, 1x1-3x3, 1x1-3x3 and pool-1x1 branches, concatenated."""

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, int, int, int, int, int],
        *,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = Unit3d(in_channels, c0, bn_eps=bn_eps)
        self.b1a = Unit3d(in_channels, c1a, bn_eps=bn_eps)
        self.b1b = Unit3d(c1a, c1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3d(in_channels, c2a, bn_eps=bn_eps)
        self.b2b = Unit3d(c2a, c2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3d(in_channels, c3b, bn_eps=bn_eps)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))],
            dim=1,
        )


class InceptionI3d(nn.Module):
    """Kinetics-400 I3D; `forward` maps [B, 3, T, 224, 224] in [-1, 1] to time-averaged logits.

    T must be at least 9 (the network downsamples time by 8 and pools over 2 steps). `bn_eps`
    follows the weights: 1e-5 for the VideoGPT/PVDM `i3d_pretrained_400.pt` port (what the
    official numbers used), 1e-3 for weights read from the TF-Hub module (Sonnet's BatchNorm).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, *, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.bn_eps = bn_eps
        self.Conv3d_1a_7x7 = Unit3d(3, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3d(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3d(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, spec in MIXED_CHANNELS.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = Mixed(channels, spec, bn_eps=bn_eps)
            self.add_module(name, block)
            channels = block.out_channels
        self.logits = Unit3d(channels, num_classes, norm_act=False)
        self.order = [
            "Conv3d_1a_7x7",
            "MaxPool3d_2a_3x3",
            "Conv3d_2b_1x1",
            "Conv3d_2c_3x3",
            "MaxPool3d_3a_3x3",
            "Mixed_3b",
            "Mixed_3c",
            "MaxPool3d_4a_3x3",
            "Mixed_4b",
            "Mixed_4c",
            "Mixed_4d",
            "Mixed_4e",
            "Mixed_4f",
            "MaxPool3d_5a_2x2",
            "Mixed_5b",
            "Mixed_5c",
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] < 9:
            raise ValueError(f"I3D needs at least 9 frames, got {x.shape[2]}")
        for name in self.order:
            x = getattr(self, name)(x)
        # The TF graph averages 2x7x7 windows (stride 1) before the 1x1 classifier, then the
        # logits are averaged over the time steps that remain (1 for 16 frames).
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)
        x = self.logits(x)  # [B, 400, T', 1, 1] at 224x224 input
        return x.mean(dim=(2, 3, 4))


def load_i3d_state_dict(model: InceptionI3d, state: Mapping[str, torch.Tensor]) -> None:
    """Load an `i3d_pretrained_400.pt`-format state dict (any float dtype), strictly."""
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    expected = model.state_dict()
    # Files converted from TF predate BatchNorm's batch counter; it is never used in eval mode.
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = expected[key]
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"not an I3D state dict: {len(not_tensors)} entries are not tensors, e.g. "
            f"{not_tensors[0]}"
        )
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = sorted(
        k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            "not an I3D (Kinetics-400, i3d_pretrained_400.pt format) state dict: "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:3]}, {len(bad_shape)} mis-shaped {bad_shape[:3]}"
        )
    not_float = sorted(
        k for k, v in expected.items() if v.is_floating_point() and not state[k].is_floating_point()
    )
    if not_float:  # load_state_dict would cast integer or bool values into the weights silently
        raise CheckpointError(
            f"not an I3D state dict: {len(not_float)} weights hold integer or bool values, e.g. "
            f"{not_float[0]} ({str(state[not_float[0]].dtype).removeprefix('torch.')})"
        )
    model.load_state_dict(state)
