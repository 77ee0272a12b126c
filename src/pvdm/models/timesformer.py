"""TimeSformer with divided space-time attention: the PVDM autoencoder's encoder and decoder.

Official `TimeSformerEncoder` / `TimeSformerDecoder` (`models/autoencoder/vit_modules.py`,
paper Sec. 3.2). Each block applies, with pre-norm residuals, attention across frames for every
patch position (temporal rotary), attention across patches within every frame (axial rotary),
and a GEGLU feed-forward. No absolute positions, no CLS token, no final norm. Tokens are held
as [B, T, N, C] with N = H' * W' patches in row-major order, the official (t, h, w) order.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
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
        value, gate = self.fc1(x).chunk(2, dim=-1)  # official order: value first, then gate
        return self.fc2(value * F.gelu(gate))


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
        b = x.shape[0]
        # x: [B, T, N, C]; time attention runs over T for every patch position n
        h = rearrange(self.time_norm(x), "b t n c -> (b n) t c")
        h = self.time_attn(h, time_rotary)
        x = x + rearrange(h, "(b n) t c -> b t n c", b=b)
        h = rearrange(self.space_norm(x), "b t n c -> (b t) n c")
        h = self.space_attn(h, space_rotary)
        x = x + rearrange(h, "(b t) n c -> b t n c", b=b)
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
