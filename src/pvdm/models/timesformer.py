"""TimeSformer with divided space-time attention: the PVDM autoencoder's encoder and decoder.

Official `TimeSformerEncoder` / `TimeSformerDecoder` (`models/autoencoder/vit_modules.py`,
paper Sec. 3.2). Each block applies, with pre-norm residuals, attention across frames for every
patch position (temporal rotary), attention across patches within every frame (axial rotary),
and a GEGLU feed-forward. No absolute positions, no CLS token, no final norm. Tokens are held
as [B, T, N, C] with N = H' * W' patches in row-major order, the official (t, h, w) order.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pvdm.models.attention import AttentionBackend, LayerNorm32, SelfAttention, maybe_checkpoint
from pvdm.models.rotary import (
    Rotary,
    TemporalRotary,
    axial_rotary,
    axial_scales,
    temporal_inv_freqs,
    temporal_rotary,
)


class GEGLUFeedForward(nn.Module):
    """Linear(C -> 2 m C), a * GELU(gate) with exact GELU, Linear(m C -> C)."""

    def __init__(self, width: int, mult: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * mult * width)
        self.fc2 = nn.Linear(mult * width, width)

    def forward(self, x: Tensor) -> Tensor:
        # recomputing the cheap gating in the backward pass saves two hidden-size activations
        return self.fc2(maybe_checkpoint(True, geglu, self.fc1(x)))


def geglu(h: Tensor) -> Tensor:
    """value * GELU(gate), with h = [value, gate] along the last axis (the official order)."""
    value, gate = h.chunk(2, dim=-1)
    return value * F.gelu(gate)


class TimeSformerBlock(nn.Module):
    """Time attention, space attention and GEGLU feed-forward, each a pre-norm residual."""

    def __init__(
        self, width: int, heads: int, head_dim: int, ff_mult: int, backend: AttentionBackend
    ) -> None:
        super().__init__()
        self.time_norm = LayerNorm32(width)
        self.time_attn = SelfAttention(width, heads, head_dim, backend)
        self.space_norm = LayerNorm32(width)
        self.space_attn = SelfAttention(width, heads, head_dim, backend)
        self.ff_norm = LayerNorm32(width)
        self.ff = GEGLUFeedForward(width, ff_mult)

    def forward(self, x: Tensor, time_rotary: Rotary, space_rotary: Rotary) -> Tensor:
        # x: [B, T, N, C]; time attention runs along T for every patch, space along N
        x = x + self.time_attn(self.time_norm(x), time_rotary, axis=1)
        x = x + self.space_attn(self.space_norm(x), space_rotary, axis=2)
        return x + self.ff(self.ff_norm(x))


class TimeSformer(nn.Module):
    """A stack of divided space-time attention blocks over tokens [B, T, H' * W', C]."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        head_dim: int,
        ff_mult: int,
        backend: AttentionBackend,
        temporal_layout: TemporalRotary = "official",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.temporal_layout = temporal_layout
        self.gradient_checkpointing = gradient_checkpointing
        # rotary frequencies are buffers, as in the official code (see rotary.py)
        self.register_buffer("rotary_inv_freqs", temporal_inv_freqs(head_dim))
        self.register_buffer("rotary_scales", axial_scales(head_dim))
        self.blocks = nn.ModuleList(
            TimeSformerBlock(width, heads, head_dim, ff_mult, backend) for _ in range(depth)
        )

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """Run the blocks on x [B, T, H' * W', C] for a patch grid of height x width."""
        frames = x.shape[1]
        time_rotary = temporal_rotary(frames, self.rotary_inv_freqs, self.temporal_layout)
        space_rotary = axial_rotary(height, width, self.rotary_scales)
        for block in self.blocks:
            x = maybe_checkpoint(self.gradient_checkpointing, block, x, time_rotary, space_rotary)
        return x
