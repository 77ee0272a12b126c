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
        # torch.group_norm, unlike F.group_norm, accepts one-element groups (a 1 x 1 plane at
        # the bottom of the UNet): they normalise to 0, which is well defined
        with torch.autocast(x.device.type, enabled=False):
            y = torch.group_norm(
                x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps
            )
        return y.to(x.dtype)


def maybe_checkpoint(enabled: bool, fn: Callable[..., R], *args) -> R:
    """`fn(*args)`, recomputed in the backward pass when `enabled` and gradients are on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class SelfAttention(nn.Module):
    """Multi-head self-attention, ViT style (qkv Linear without bias, output Linear with bias).

    `forward(x, rotary, axis)` attends along one axis of x [B, ..., C], the other axes acting as
    batch: [B, L, C] along L, or [B, T, N, C] along T (time) or N (space), without
    rearranging x first. Optional rotary embeddings (cos, sin) are applied to q and k; the logit
    scale head_dim^-1/2 goes to the kernel (the official code scales q before the rotation,
    the same linear map, and by 1/8 for d = 64: exact).
    """

    def __init__(self, width: int, heads: int, head_dim: int, backend: AttentionBackend) -> None:
        super().__init__()
        self.heads, self.head_dim, self.backend = heads, head_dim, backend
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.out = nn.Linear(heads * head_dim, width)

    def forward(self, x: Tensor, rotary: Rotary | None = None, axis: int = 1) -> Tensor:
        n = x.ndim - 1  # number of leading (batch and sequence) axes
        others = [i for i in range(n) if i != axis]
        # qkv channels are ordered (q|k|v, head, d), as the official chunk(3) + '(h d)'
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim))
        qkv = qkv.permute(n, *others, n + 1, axis, n + 2).contiguous()  # [3, *others, h, L, d]
        qkv = qkv.flatten(1, len(others))  # [3, B', heads, L, d]
        q, k, v = qkv.unbind(0)  # unbind, not slicing: its backward is one stack, no zero-fill
        if rotary is not None:
            # v gets its own copy so that the qkv buffer is freed once q and k are rotated
            q, k, v = apply_rotary(q, rotary), apply_rotary(k, rotary), v.clone()
        out = attention(q, k, v, scale=self.head_dim**-0.5, backend=self.backend)
        out = out.unflatten(0, [x.shape[i] for i in others])  # [*others, h, L, d]
        m = len(others)
        order = [others.index(i) if i != axis else m + 1 for i in range(n)]
        out = out.permute(*order, m, m + 2).reshape(*x.shape[:-1], -1)
        return self.out(out)

    def forward_one(self, x: Tensor, index: int) -> Tensor:
        """Attention output [B, 1, C] of the query at `index` only, over x [B, L, C]."""
        b, length, _ = x.shape
        inner = self.heads * self.head_dim
        q = F.linear(x[:, index : index + 1], self.qkv.weight[:inner])
        q = q.view(b, 1, self.heads, self.head_dim).transpose(1, 2).contiguous()
        kv = F.linear(x, self.qkv.weight[inner:]).view(b, length, 2, self.heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        out = attention(q, k, v, scale=self.head_dim**-0.5, backend=self.backend)
        return self.out(out.transpose(1, 2).reshape(b, 1, inner))
