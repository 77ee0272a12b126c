"""The projected (triplane) latent of PVDM (paper Sec. 3.1, official `extract`/`decode_from_sample`).

A video clip is encoded into three 2D planes, each named by the two video axes it keeps:

| plane | keeps  | shape          | paper            | official code |
|-------|--------|----------------|------------------|---------------|
| `hw`  | (h, w) | [B, C, H', W'] | z^s (pooled over t) | `xy`       |
| `tw`  | (t, w) | [B, C, T', W'] | pooled over h    | `yt`          |
| `th`  | (t, h) | [B, C, T', H'] | pooled over w    | `xt`          |

`pack()` flattens each plane row-major and concatenates them along the last axis in the order
hw, tw, th, giving `[B, C, H'W' + T'W' + T'H']`. That is exactly the official flat latent
(`extract`); `unpack(packed, shape)` is its inverse. Packing happens only at the edges: the
latent cache's shards and the official code's tensors.

`TriplaneLatent` is the one latent type from the encoder through training and the samplers to
the decoder. The samplers and the diffusion loss do their arithmetic on it directly, with
tensor semantics per plane: `+ - * /` with another latent, a Python number, a 0-d tensor or a
tensor of shape [B] (one value per sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeAlias

import torch
from torch import Tensor

PLANES = ("hw", "tw", "th")

Generator: TypeAlias = torch.Generator | Sequence[torch.Generator] | None


class LatentShape(NamedTuple):
    """Per-sample latent size: channels, frames T', height H', width W'."""

    channels: int
    frames: int
    height: int
    width: int

    @property
    def num_tokens(self) -> int:
        """Length of the packed latent: H'W' + T'W' + T'H'."""
        return self.height * self.width + self.frames * self.width + self.frames * self.height


class TriplaneLatent:
    """Three latent planes `hw` [B,C,H',W'], `tw` [B,C,T',W'], `th` [B,C,T',H']."""

    __slots__ = ("hw", "th", "tw")

    def __init__(self, hw: Tensor, tw: Tensor, th: Tensor) -> None:
        b, c, h, w = hw.shape
        if tw.shape[:2] != (b, c) or th.shape[:2] != (b, c) or tw.ndim != 4 or th.ndim != 4:
            raise ValueError(
                f"planes disagree on batch/channels: hw {tuple(hw.shape)}, "
                f"tw {tuple(tw.shape)}, th {tuple(th.shape)}"
            )
        if tw.shape[3] != w or th.shape[3] != h or tw.shape[2] != th.shape[2]:
            raise ValueError(
                f"plane sizes are inconsistent: hw {tuple(hw.shape)} (B,C,H,W), "
                f"tw {tuple(tw.shape)} (B,C,T,W), th {tuple(th.shape)} (B,C,T,H)"
            )
        self.hw, self.tw, self.th = hw, tw, th

    # ---- shape information -------------------------------------------------------------------
    @property
    def planes(self) -> tuple[Tensor, Tensor, Tensor]:
        """The planes in packed order (hw, tw, th)."""
        return (self.hw, self.tw, self.th)

    @property
    def batch_size(self) -> int:
        """Number of samples B."""
        return self.hw.shape[0]

    @property
    def shape(self) -> LatentShape:
        """Per-sample size (channels, frames, height, width)."""
        _, c, h, w = self.hw.shape
        return LatentShape(c, self.tw.shape[2], h, w)

    @property
    def device(self) -> torch.device:
        """Device of the planes."""
        return self.hw.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the planes."""
        return self.hw.dtype

    def __repr__(self) -> str:
        return f"TriplaneLatent(batch={self.batch_size}, {self.shape}, dtype={self.dtype})"

    # ---- packing -----------------------------------------------------------------------------
    def pack(self) -> Tensor:
        """One tensor [B, C, H'W' + T'W' + T'H'] in the official flat order (hw, tw, th)."""
        return torch.cat([p.flatten(2) for p in self.planes], dim=-1)

    @classmethod
    def unpack(cls, packed: Tensor, shape: LatentShape) -> TriplaneLatent:
        """Inverse of `pack()`: planes of the per-sample `shape` from [B, C, N]."""
        c, t, h, w = shape
        sizes = (h * w, t * w, t * h)
        if packed.ndim != 3 or tuple(packed.shape[1:]) != (c, sum(sizes)):
            raise ValueError(
                f"packed latent must be [B, {c}, {sum(sizes)}] for {shape}; "
                f"got {tuple(packed.shape)}"
            )
        hw, tw, th = packed.split(sizes, dim=-1)
        return cls(hw.unflatten(-1, (h, w)), tw.unflatten(-1, (t, w)), th.unflatten(-1, (t, h)))

    # ---- construction helpers ----------------------------------------------------------------
    def map(self, fn: Callable[[Tensor], Tensor]) -> TriplaneLatent:
        """Apply `fn` to each plane."""
        return TriplaneLatent(fn(self.hw), fn(self.tw), fn(self.th))

    def zeros_like(self) -> TriplaneLatent:
        """A latent of zeros with the same shapes, dtype and device."""
        return self.map(torch.zeros_like)

    def randn_like(self, generator: Generator = None) -> TriplaneLatent:
        """Standard normal noise with the same shapes (see `randn_latent`)."""
        return randn_latent(self.batch_size, self.shape, generator, self.device, self.dtype)

    @staticmethod
    def cat(latents: Sequence[TriplaneLatent]) -> TriplaneLatent:
        """Concatenate latents along the batch axis."""
        return TriplaneLatent(*(torch.cat([z.planes[i] for z in latents]) for i in range(3)))

    def __getitem__(self, index: int | slice | Tensor) -> TriplaneLatent:
        """Select samples; an integer index keeps the batch axis (a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self.map(lambda p: p[index])

    def __len__(self) -> int:
        return self.batch_size

    # ---- tensor-like conveniences ------------------------------------------------------------
    def to(self, *args, **kwargs) -> TriplaneLatent:
        """`Tensor.to` on each plane."""
        return self.map(lambda p: p.to(*args, **kwargs))

    def float(self) -> TriplaneLatent:
        """The planes as float32."""
        return self.map(lambda p: p.float())

    def detach(self) -> TriplaneLatent:
        """The planes detached from the autograd graph."""
        return self.map(lambda p: p.detach())

    def clamp(self, min: float | None = None, max: float | None = None) -> TriplaneLatent:
        """Elementwise clamp."""
        return self.map(lambda p: p.clamp(min, max))

    # ---- arithmetic --------------------------------------------------------------------------
    def _binary(self, other: object, op: Callable[[Tensor, object], Tensor]) -> TriplaneLatent:
        if isinstance(other, TriplaneLatent):
            return TriplaneLatent(*(op(a, b) for a, b in zip(self.planes, other.planes)))
        if isinstance(other, Tensor):
            if other.ndim == 1 and other.shape[0] == self.batch_size:
                other = other.view(-1, 1, 1, 1)  # one value per sample
            elif other.ndim != 0:
                raise ValueError(
                    f"a latent combines with a scalar or a tensor of shape [{self.batch_size}], "
                    f"not {tuple(other.shape)}"
                )
        elif not isinstance(other, (int, float)):
            return NotImplemented
        return self.map(lambda p: op(p, other))

    def __add__(self, other):
        return self._binary(other, lambda a, b: a + b)

    def __radd__(self, other):
        return self._binary(other, lambda a, b: b + a)

    def __sub__(self, other):
        return self._binary(other, lambda a, b: a - b)

    def __rsub__(self, other):
        return self._binary(other, lambda a, b: b - a)

    def __mul__(self, other):
        return self._binary(other, lambda a, b: a * b)

    def __rmul__(self, other):
        return self._binary(other, lambda a, b: b * a)

    def __truediv__(self, other):
        return self._binary(other, lambda a, b: a / b)

    def __rtruediv__(self, other):
        return self._binary(other, lambda a, b: b / a)

    def __neg__(self) -> TriplaneLatent:
        return self.map(torch.neg)


def randn_latent(
    batch_size: int,
    shape: LatentShape,
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TriplaneLatent:
    """Standard normal latent noise, drawn as one packed tensor [B, C, N] and unpacked.

    Drawing the packed tensor means one noise tensor maps to one latent, whatever the plane
    sizes. `generator` is one generator or a list with one per sample: with a list, every
    sample's noise comes from its own generator, so it does not depend on the batch.
    """
    per_sample = (1, shape.channels, shape.num_tokens)
    if generator is None or isinstance(generator, torch.Generator):
        packed = torch.randn(
            (batch_size, *per_sample[1:]), generator=generator, device=device, dtype=dtype
        )
    else:
        if len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}")
        packed = torch.cat(
            [torch.randn(per_sample, generator=g, device=device, dtype=dtype) for g in generator]
        )
    return TriplaneLatent.unpack(packed, shape)
