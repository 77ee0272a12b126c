"""Shared layers: the attention kernel, float32 normalisations, activation checkpointing.

Every attention in the autoencoder and the UNet goes through `attention()`, which takes
contiguous [B, heads, N, d] tensors and runs either `scaled_dot_product_attention` (flash /
memory-efficient kernels, the default) or a plain matmul-softmax ("math", kept for comparison
and benchmarks). Both compute softmax(q k^T * scale) v with softmax statistics in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pvdm.models.rotary import Rotary, apply_rotary

AttentionBackend = Literal["sdpa", "math"]
ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "math")

R = TypeVar("R")


def attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float, backend: AttentionBackend = "sdpa"
) -> Tensor:
    """softmax(q k^T * scale) v for q, k, v of shape [B, heads, N, d]."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    weights = torch.softmax(logits.float(), dim=-1).to(v.dtype)
    return torch.matmul(weights, v)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype or autocast state."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = F.layer_norm(
                x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
            )
        return y.to(x.dtype)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (32 groups by default) computed in float32, as guided-diffusion's GroupNorm32."""

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__(groups, channels)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = F.group_norm(
                x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps
            )
        return y.to(x.dtype)


def maybe_checkpoint(enabled: bool, fn: Callable[..., R], *args) -> R:
    """`fn(*args)`, recomputed in the backward pass when `enabled` and gradients are on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class SelfAttention(nn.Module):
    """Multi-head self-attention over [B, N, width] (ViT style: qkv Linear without bias).

    Optional rotary embeddings (cos, sin) are applied to q and k; the logit scale
    head_dim^-1/2 is passed to the kernel (the official code scales q before the rotation,
    which is the same linear map).
    """

    def __init__(self, width: int, heads: int, head_dim: int, backend: AttentionBackend) -> None:
        super().__init__()
        self.heads, self.head_dim, self.backend = heads, head_dim, backend
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.out = nn.Linear(heads * head_dim, width)

    def forward(self, x: Tensor, rotary: Rotary | None = None) -> Tensor:
        b, n, _ = x.shape
        # channels of qkv are ordered (q|k|v, head, d), as the official chunk(3) + '(h d)'
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4).contiguous()  # [3, B, heads, N, d]
        if rotary is None:
            q, k, v = qkv.unbind(0)
        else:  # rotate q and k in one pass
            (q, k), v = apply_rotary(qkv[:2], rotary).unbind(0), qkv[2]
        out = attention(q, k, v, scale=self.head_dim**-0.5, backend=self.backend)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.out(out)
