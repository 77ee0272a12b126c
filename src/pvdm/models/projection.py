"""Attention pooling of the feature cube onto one plane (paper Sec. 3.1, the "projection").

Official `{xy,yt,xt}_quant_attn` with `{xy,yt,xt}_token` and `*_pos_embedding`
(`models/autoencoder/autoencoder_vit.py`): every line of the cube along the pooled axis is a
sequence; a learned token is appended at the end, a learned position embedding is added to all
n + 1 positions, a small pre-norm transformer (GELU MLP, no rotary, no final norm) runs, and one
output position is kept per sequence.

Official quirk (kept by default, `readout="first"`): the output is read at index 0, the first
real element (frame 0, row 0 or column 0), not at the appended token, which only acts as an
extra key/value slot. Released checkpoints were trained with it. `readout="token"` reads the
appended token instead, for models trained from scratch.

The position embedding has `length + 1` entries for sequences of `length` elements: frames for
the hw plane, H' for the tw plane, W' for the th plane (the official code sizes both spatial ones
from the resolution, i.e. a square latent).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pvdm.models.attention import AttentionBackend, LayerNorm32, SelfAttention, maybe_checkpoint

Readout = Literal["first", "token"]


class MLP(nn.Module):
    """Linear, exact GELU, Linear."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class ProjectionBlock(nn.Module):
    """Pre-norm attention and MLP residual branches."""

    def __init__(
        self, width: int, heads: int, head_dim: int, mlp_dim: int, backend: AttentionBackend
    ) -> None:
        super().__init__()
        self.attn_norm = LayerNorm32(width)
        self.attn = SelfAttention(width, heads, head_dim, backend)
        self.ff_norm = LayerNorm32(width)
        self.ff = MLP(width, mlp_dim)

    def forward(self, x: Tensor, readout: int | None = None) -> Tensor:
        """x [B', L, C] -> [B', L, C], or [B', 1, C] at position `readout` only."""
        if readout is None:
            x = x + self.attn(self.attn_norm(x))
        else:  # the other positions of the last block are never read: skip them
            x = x[:, readout : readout + 1] + self.attn.forward_one(self.attn_norm(x), readout)
        return x + self.ff(self.ff_norm(x))


class PlanePooling(nn.Module):
    """Pool sequences [B', length, C] to [B', C] with a learned token and a small transformer."""

    def __init__(
        self,
        width: int,
        length: int,
        depth: int,
        heads: int,
        head_dim: int,
        mlp_dim: int,
        backend: AttentionBackend,
        readout: Readout = "first",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.readout = readout
        self.gradient_checkpointing = gradient_checkpointing
        self.token = nn.Parameter(torch.randn(1, 1, width))
        self.pos_embedding = nn.Parameter(torch.randn(1, length + 1, width))
        self.blocks = nn.ModuleList(
            ProjectionBlock(width, heads, head_dim, mlp_dim, backend) for _ in range(depth)
        )

    def forward(self, seq: Tensor) -> Tensor:
        token = self.token.to(seq.dtype).expand(seq.shape[0], 1, -1)
        x = torch.cat([seq, token], dim=1) + self.pos_embedding.to(seq.dtype)
        readout = 0 if self.readout == "first" else x.shape[1] - 1
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x = maybe_checkpoint(self.gradient_checkpointing, block, x, readout if last else None)
        return x[:, 0]
