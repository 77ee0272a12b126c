"""Where metric networks run, and at what float32 precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU if it has none)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def full_fp32_convs(device: torch.device) -> Iterator[None]:
    """Run cuDNN float32 convolutions in full float32 (no TF32) inside the block.

    TF32 convolutions (10 mantissa bits) are PyTorch's default on recent GPUs; they move the
    features far more than float32 rounding does, so reference-precision features turn them
    off. A no-op on other devices.
    """
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        owner, name, value = conv, "fp32_precision", "ieee"
    else:
        owner, name, value = torch.backends.cudnn, "allow_tf32", False
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)
