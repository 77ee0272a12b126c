"""Pieces every sampler shares: noise drawn per sample, the x0 clamp, the timestep batch, the
progress callback, and diffusers' "linspace" time grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import torch

from pvdm.diffusion.schedule import Latent
from pvdm.models.latent import Generator, TriplaneLatent, randn_latent

Callback: TypeAlias = Callable[[dict[str, Any]], None]


def randn_like(x: Latent, generator: Generator = None) -> Latent:
    """Standard normal noise shaped like x, from one generator or one per sample."""
    if isinstance(x, TriplaneLatent):
        return randn_latent(len(x), x.shape, generator, x.device, x.dtype)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator]
    )


def clamp_x0(x0: Latent, clip_x0: bool | float) -> Latent:
    """x0 clamped to [-c, c]: c = 1 for True (the autoencoder's tanh range), none for False."""
    if clip_x0 is False or clip_x0 == 0:
        return x0
    bound = 1.0 if clip_x0 is True else float(clip_x0)
    return x0.clamp(-bound, bound)


def timestep_batch(x: Latent, t: int) -> torch.Tensor:
    return torch.full((len(x),), t, device=x.device, dtype=torch.long)


def report_step(callback: Callback | None, step: int, total: int, t: int, x: Latent, x0: Latent):
    if callback is not None:
        callback({"step": step, "total": total, "t": t, "x": x, "x0": x0})


def dpm_solver_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """diffusers' "linspace" spacing: round(linspace(0, T-1, S+1)) reversed, last dropped."""
    grid = np.linspace(0, num_timesteps - 1, steps + 1).round()[::-1][:-1]
    return [int(t) for t in grid]
