"""Layers of the PVDM diffusion UNet (official `models/ddpm/unet.py`, guided-diffusion style).

- `timestep_embedding`: sinusoidal, ordered [cos, sin], max period 10,000.
- `ResBlock`: GroupNorm32-SiLU-conv, scale-shift conditioning on the timestep embedding,
  GroupNorm32-SiLU-dropout-conv (zero-initialised), 1x1 conv skip when the width changes;
  optional 2x down- (average pooling) or up-sampling (nearest) of both paths.
- `TokenAttention`: guided-diffusion's `AttentionBlock` with the legacy head order over
  [B, C, L] tokens; used per plane (2D attention, L = H * W) and jointly over all planes.
- `TriplaneBlock`: layers applied to each plane with shared weights, then joint attention over
  the concatenated tokens of the three planes (the only place the planes exchange information).

Sizes that are not powers of two: down-sampling averages 2x2 windows with `ceil_mode`, so an
odd side n becomes ceil(n / 2) (the last window averages the elements it covers), and
up-sampling repeats each element twice and crops to the size of the skip connection it meets.
At even sizes both are exactly the official operations.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pvdm.models.attention import AttentionBackend, GroupNorm32, attention

Resample = Literal["up", "down"] | None


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps t [B], as [cos, sin]."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def downsample(x: Tensor) -> Tensor:
    """2x2 average pooling; odd sides round up."""
    return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


def upsample(x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Nearest-neighbour 2x up-sampling, cropped to `size` when given."""
    x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    if size is not None:
        x = x[..., : size[0], : size[1]]
    return x


class ResBlock(nn.Module):
    """guided-diffusion ResBlock with scale-shift norm and optional up/down-sampling."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, resample: Resample = None
    ) -> None:
        super().__init__()
        self.resample = resample
        self.norm1 = GroupNorm32(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = GroupNorm32(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def _resample(self, x: Tensor, size: tuple[int, int] | None) -> Tensor:
        if self.resample == "down":
            return downsample(x)
        if self.resample == "up":
            return upsample(x, size)
        return x

    def forward(self, x: Tensor, emb: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """x [B, C, H, W], emb [B, emb_dim]; `size` is the output size when up-sampling."""
        h = F.silu(self.norm1(x))
        h = self.conv1(self._resample(h, size))
        x = self._resample(x, size)
        scale, shift = self.emb_proj(F.silu(emb)).to(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class TokenAttention(nn.Module):
    """Self-attention over tokens [B, C, L] with GroupNorm32 and a residual connection.

    The qkv projection's 3C outputs are ordered (head, q|k|v, channel): guided-diffusion's
    legacy order, kept so official weights load unchanged. The official code scales q and k by
    ch^-1/4 each; the kernel gets the equivalent logit scale ch^-1/2.
    """

    def __init__(self, channels: int, heads: int, backend: AttentionBackend) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} is not divisible by {heads} heads")
        self.heads, self.backend = heads, backend
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, length = x.shape
        ch = c // self.heads
        qkv = self.qkv(self.norm(x).transpose(1, 2))  # [B, L, 3C]
        qkv = qkv.view(b, length, self.heads, 3, ch).permute(3, 0, 2, 1, 4).contiguous()
        q, k, v = qkv.unbind(0)  # each [B, heads, L, ch]
        out = attention(q, k, v, scale=ch**-0.5, backend=self.backend)
        out = self.proj(out.transpose(1, 2).reshape(b, length, c))  # [B, L, C]
        return x + out.transpose(1, 2)

    def forward_plane(self, x: Tensor) -> Tensor:
        """Attention within one plane [B, C, H, W]."""
        return self.forward(x.flatten(2)).view(x.shape)


Planes = list[Tensor]  # [hw, tw, th], each [B, C, *plane size]


def joint_attention(attn: TokenAttention, planes: Planes) -> Planes:
    """`attn` over the concatenated tokens of all planes, split back into planes."""
    sizes = [p.shape[2] * p.shape[3] for p in planes]
    tokens = attn(torch.cat([p.flatten(2) for p in planes], dim=-1))
    return [t.view(p.shape) for t, p in zip(tokens.split(sizes, dim=-1), planes)]


class TriplaneBlock(nn.Module):
    """`res` [+ `attn`] [+ `res2`] on each plane with shared weights, then joint attention.

    `res2` is the up-sampling ResBlock of an up block, or the second ResBlock of the middle.
    """

    def __init__(
        self,
        res: ResBlock,
        attn: TokenAttention | None,
        res2: ResBlock | None,
        joint_attn: TokenAttention,
    ) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.res2 = res2
        self.joint_attn = joint_attn

    def forward(
        self, planes: Planes, embs: list[Tensor], sizes: list[tuple[int, int]] | None = None
    ) -> Planes:
        """Planes in, planes out; `embs` holds each plane's embedding [B, emb_dim] (the same
        tensor three times in the official model); `sizes` are the plane sizes after
        up-sampling (if any)."""
        out = []
        for i, (h, emb) in enumerate(zip(planes, embs, strict=True)):
            h = self.res(h, emb)
            if self.attn is not None:
                h = self.attn.forward_plane(h)
            if self.res2 is not None:
                h = self.res2(h, emb, sizes[i] if sizes else None)
            out.append(h)
        return joint_attention(self.joint_attn, out)
