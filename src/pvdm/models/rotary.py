"""Rotary position embeddings of the official TimeSformer (`models/autoencoder/vit_modules.py`).

Both embeddings cover the full head dimension d and are applied as
`x' = x * cos + rotate_every_two(x) * sin`, where `rotate_every_two` maps each adjacent pair
(x_2i, x_2i+1) to (-x_2i+1, x_2i). Here `sin` carries the sign pattern (-, +) so that the
rotation becomes a pair swap: `x' = x * cos + swap_pairs(x) * signed_sin`, bit-identical.

Official quirk (kept by default, `temporal_rotary="official"`): the temporal embedding lays
its d/2 frequencies out in halves, `[p*f_0 .. p*f_{d/2-1}, p*f_0 .. p*f_{d/2-1}]`, while the
rotation pairs adjacent dimensions, so pair (2i, 2i+1) is turned by two different angles and
the map is not a rotation. Released checkpoints were trained with it. `"paired"` gives each
pair one frequency (a proper rotation) for models trained from scratch.

The frequencies are buffers of the model (as in the official code), so a checkpoint's values
are used as stored: the official golden vectors were computed with float16-rounded buffers, and
recomputing them in float32 would move the outputs by ~5e-5.

The spatial (axial) embedding is a proper rotation: rows use the first d/2 dimensions and
columns the last d/2, each angle repeated for both members of a pair, with positions
`linspace(-1, 1, n)` scaled by `pi * 2**linspace(0, log2(max_freq / 2), d/4)`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange, repeat
from torch import Tensor

TemporalRotary = Literal["official", "paired"]
Rotary = tuple[Tensor, Tensor]  # (cos, signed sin), each [N, d] float32


def _signed(angles: Tensor) -> Rotary:
    sign = torch.tensor([-1.0, 1.0], device=angles.device).repeat(angles.shape[-1] // 2)
    return angles.cos(), angles.sin() * sign


def temporal_inv_freqs(head_dim: int) -> Tensor:
    """The d/2 temporal frequencies 10000^(-2k/d) (official `frame_rot_emb.inv_freqs`)."""
    return 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))


def axial_scales(head_dim: int, max_freq: float = 10.0) -> Tensor:
    """The d/4 axial scales 2^linspace(0, log2(max_freq/2)) (official `image_rot_emb.scales`)."""
    return torch.logspace(0.0, math.log(max_freq / 2) / math.log(2), head_dim // 4, base=2)


def temporal_rotary(
    num_frames: int, inv_freqs: Tensor, layout: TemporalRotary = "official"
) -> Rotary:
    """(cos, signed sin) [num_frames, d] for integer frame positions 0..num_frames-1."""
    # float32, in the official order of operations
    positions = torch.arange(num_frames, device=inv_freqs.device).float()
    freqs = positions[:, None] * inv_freqs.float()[None, :]
    if layout == "official":
        angles = torch.cat((freqs, freqs), dim=-1)
    else:
        angles = freqs.repeat_interleave(2, dim=-1)
    return _signed(angles)


def axial_rotary(height: int, width: int, scales: Tensor) -> Rotary:
    """(cos, signed sin) [height * width, d] for a row-major grid of patches."""
    scales, device = scales.float(), scales.device
    rows = torch.linspace(-1.0, 1.0, steps=height, device=device)[:, None] * scales * math.pi
    cols = torch.linspace(-1.0, 1.0, steps=width, device=device)[:, None] * scales * math.pi
    angles = torch.cat(
        (repeat(rows, "i d -> i j d", j=width), repeat(cols, "j d -> i j d", i=height)), dim=-1
    )
    angles = rearrange(angles, "i j d -> (i j) d").repeat_interleave(2, dim=-1)
    return _signed(angles)


def apply_rotary(x: Tensor, rotary: Rotary) -> Tensor:
    """Rotate x [..., N, d] by (cos, signed sin) [N, d], computed in x's dtype."""
    cos, sin = (r.to(x.dtype) for r in rotary)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos, swapped, sin)
