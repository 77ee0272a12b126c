"""Samplers: plain functions over a denoiser, sharing one signature.

    sampler(model, noise, steps, *, eta, cond, guidance, labels, class_guidance, generator,
            schedule, clip_x0, progress) -> final latent

`model(x_t, t, cond=..., labels=...)` predicts the noise (epsilon). `noise` is the starting
latent (a `TriplaneLatent`, or a plain tensor for a model that takes tensors); the result has
the same form. Internally everything runs on the packed tensor [B, C, N].

- `ddpm_sample`: the official ancestral sampler over all 1000 steps (`p_sample_loop`).
- `ddim_sample`: the official strided DDIM (`ddim_sample`): time grid
  `linspace(-1, T-1, S+1)` truncated to int, x0 clamped to [-1, 1] without recomputing eps,
  the last pair returning the x0 prediction, and the official guidance
  `(1 + w) eps(x, c) - w eps(x, 0)`.
- `dpm_solver_sample`: DPM-Solver++(2M) with x0 clamping; matches diffusers'
  `DPMSolverMultistepScheduler` (test_diffusion_samplers.py) and needs ~20 steps.

`generator` is one `torch.Generator` or a list with one per sample: with a list, every sample's
noise comes from its own generator, so outputs do not depend on the batch they were drawn in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pvdm.diffusion.schedule import NoiseSchedule

Generator = torch.Generator | Sequence[torch.Generator] | None


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Standard normal noise shaped like x, from one generator or one per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator]
    )


class _Packed:
    """Converts between the caller's latent form and the packed tensor [B, C, N]."""

    def __init__(self, like: Any):
        self.is_tensor = isinstance(like, torch.Tensor)
        if not self.is_tensor:
            self.frames = like.tw.shape[2]
            self.height = like.th.shape[3]
            self.width = like.tw.shape[3]
            self.latent_type = type(like)

    def pack(self, z: Any) -> torch.Tensor:
        return z if self.is_tensor else z.pack()

    def unpack(self, x: torch.Tensor) -> Any:
        if self.is_tensor:
            return x
        return self.latent_type.unpack(x, frames=self.frames, height=self.height, width=self.width)


def make_denoiser(
    model: Callable[..., Any],
    like: Any,
    *,
    cond: Any = None,
    labels: torch.Tensor | None = None,
    guidance: float = 0.0,
    class_guidance: float = 0.0,
    null_label: int | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """eps(x_packed, t) with the official frame guidance and class classifier-free guidance.

    Frame guidance (official): `(1 + w) eps(x, c) - w eps(x, 0)`, only when a condition is given.
    Class guidance: `(1 + s) eps(x, c, y) - s eps(x, c, null)`.
    """
    packed = _Packed(like)
    zero_cond = None
    if cond is not None and guidance != 0.0:
        zero_cond = cond * 0 if isinstance(cond, torch.Tensor) else cond.map(torch.zeros_like)
    null = None
    if labels is not None and class_guidance != 0.0:
        if null_label is None:
            null_label = getattr(getattr(model, "config", None), "num_classes", None)
        if null_label is None:
            raise ValueError("class guidance needs the model's null class index")
        null = torch.full_like(labels, null_label)

    def eps(x: torch.Tensor, t: torch.Tensor, c: Any, y: torch.Tensor | None) -> torch.Tensor:
        kwargs = {"cond": c}
        if y is not None:
            kwargs["labels"] = y
        return packed.pack(model(packed.unpack(x), t, **kwargs)).float()

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = eps(x, t, cond, labels)
        if zero_cond is not None:
            out = (1 + guidance) * out - guidance * eps(x, t, zero_cond, labels)
        if null is not None:
            out = (1 + class_guidance) * out - class_guidance * eps(x, t, cond, null)
        return out

    return denoise


def _setup(model, noise, schedule, cond, labels, guidance, class_guidance):
    schedule = schedule or NoiseSchedule()
    packed = _Packed(noise)
    x = packed.pack(noise).float()
    denoise = make_denoiser(
        model, noise, cond=cond, labels=labels, guidance=guidance, class_guidance=class_guidance
    )
    return schedule, packed, x, denoise


def _coef(values: torch.Tensor, index: int, x: torch.Tensor) -> torch.Tensor:
    return values[index].to(x.device)


@torch.no_grad()
def ddim_sample(
    model: Callable[..., Any],
    noise: Any,
    steps: int,
    eta: float = 0.0,
    cond: Any = None,
    guidance: float = 0.0,
    generator: Generator = None,
    *,
    labels: torch.Tensor | None = None,
    class_guidance: float = 0.0,
    schedule: NoiseSchedule | None = None,
    clip_x0: bool = True,
    progress: bool = False,
) -> Any:
    """The official strided DDIM sampler; `eta=1` is ancestral sampling on the sub-grid."""
    schedule, packed, x, denoise = _setup(
        model, noise, schedule, cond, labels, guidance, class_guidance
    )
    num_t = schedule.num_timesteps
    if not 1 <= steps <= num_t:
        raise ValueError(f"DDIM steps must be in [1, {num_t}], got {steps}")
    times = torch.linspace(-1, num_t - 1, steps + 1).int().tolist()[::-1]
    acp = schedule.alphas_cumprod
    for t, t_next in tqdm(list(itertools.pairwise(times)), desc="ddim", disable=not progress):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = denoise(x, t_batch)
        x0 = schedule.predict_x0(x, t_batch, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        if t_next < 0:
            x = x0
            continue
        alpha, alpha_next = _coef(acp, t, x), _coef(acp, t_next, x)
        sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
        c = (1 - alpha_next - sigma**2).sqrt()
        x = x0 * alpha_next.sqrt() + c * eps
        if eta > 0:
            x = x + sigma * randn_like(x, generator)
    return packed.unpack(x)


@torch.no_grad()
def ddpm_sample(
    model: Callable[..., Any],
    noise: Any,
    steps: int | None = None,
    eta: float = 1.0,
    cond: Any = None,
    guidance: float = 0.0,
    generator: Generator = None,
    *,
    labels: torch.Tensor | None = None,
    class_guidance: float = 0.0,
    schedule: NoiseSchedule | None = None,
    clip_x0: bool = True,
    progress: bool = False,
) -> Any:
    """Official ancestral DDPM over every step: posterior mean, fixed-small variance.

    `steps` must be None or the schedule's length; `eta` is accepted for the shared signature.
    (The official `p_sample_loop` ignores guidance; here it applies when asked for.)
    """
    schedule, packed, x, denoise = _setup(
        model, noise, schedule, cond, labels, guidance, class_guidance
    )
    num_t = schedule.num_timesteps
    if steps not in (None, num_t):
        raise ValueError(f"DDPM runs all {num_t} steps; use ddim (eta=1) for {steps} steps")
    for t in tqdm(range(num_t - 1, -1, -1), desc="ddpm", disable=not progress):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = denoise(x, t_batch)
        x0 = schedule.predict_x0(x, t_batch, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean = (
            schedule.at("posterior_mean_coef1", t_batch, x.ndim) * x0
            + schedule.at("posterior_mean_coef2", t_batch, x.ndim) * x
        )
        if t > 0:
            log_var = schedule.at("posterior_log_variance_clipped", t_batch, x.ndim)
            x = mean + (0.5 * log_var).exp() * randn_like(x, generator)
        else:
            x = mean
    return packed.unpack(x)


def dpm_solver_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """diffusers' "linspace" spacing: round(linspace(0, T-1, S+1)) reversed, last dropped."""
    grid = np.linspace(0, num_timesteps - 1, steps + 1).round()[::-1][:-1]
    return [int(t) for t in grid]


@torch.no_grad()
def dpm_solver_sample(
    model: Callable[..., Any],
    noise: Any,
    steps: int = 20,
    eta: float = 0.0,
    cond: Any = None,
    guidance: float = 0.0,
    generator: Generator = None,
    *,
    labels: torch.Tensor | None = None,
    class_guidance: float = 0.0,
    schedule: NoiseSchedule | None = None,
    clip_x0: bool = True,
    progress: bool = False,
) -> Any:
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, midpoint form, final step to sigma 0.

    Deterministic (`eta` and `generator` are accepted for the shared signature). The x0
    prediction is clamped to [-1, 1] like the official samplers (diffusers: thresholding with
    sample_max_value=1). The last step is first order, as diffusers does when the final sigma
    is zero.
    """
    schedule, packed, x, denoise = _setup(
        model, noise, schedule, cond, labels, guidance, class_guidance
    )
    timesteps = dpm_solver_timesteps(schedule.num_timesteps, steps)
    acp = schedule.alphas_cumprod.double()
    # alpha_t, sigma_t of each grid point, then the final point at sigma = 0 (alpha = 1)
    alphas = [float(acp[t].sqrt()) for t in timesteps] + [1.0]
    sigmas = [float((1 - acp[t]).sqrt()) for t in timesteps] + [0.0]
    lambdas = [np.log(a) - np.log(s) if s > 0 else np.inf for a, s in zip(alphas, sigmas)]
    x0_prev = None
    for i, t in enumerate(tqdm(timesteps, desc="dpm-solver++", disable=not progress)):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = denoise(x, t_batch)
        x0 = (x - sigmas[i] * eps) / alphas[i]
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        h = lambdas[i + 1] - lambdas[i]
        phi = np.expm1(-h)  # exp(-h) - 1
        last = i == len(timesteps) - 1
        ratio = sigmas[i + 1] / sigmas[i]
        if x0_prev is None or last:
            x = ratio * x - alphas[i + 1] * phi * x0
        else:
            r = (lambdas[i] - lambdas[i - 1]) / h
            d1 = (x0 - x0_prev) / r
            x = ratio * x - alphas[i + 1] * phi * x0 - 0.5 * alphas[i + 1] * phi * d1
        x0_prev = x0
    return packed.unpack(x)


SAMPLERS: dict[str, Callable[..., Any]] = {
    "ddim": ddim_sample,
    "ddpm": ddpm_sample,
    "dpm": dpm_solver_sample,
}
