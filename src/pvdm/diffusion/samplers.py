"""Samplers: plain functions of a denoiser, sharing one signature (as k-diffusion writes them).

    sampler(denoiser, noise, schedule, steps=None, *, eta, generator, clip_x0, callback) -> x_0

`denoiser(x_t, t)` predicts the noise (epsilon) for timesteps t [B]. Build it once with
`make_denoiser(model, cond=..., labels=..., guidance=..., class_guidance=...)`, which wraps a
network `model(x_t, t, cond=..., labels=...)` and applies guidance; a sampler knows nothing of
conditions. `noise` is the starting latent, a `TriplaneLatent` (or a plain tensor for a toy
denoiser): the samplers only use its arithmetic, and the result has the same form.

- `ddpm_sample`: the official ancestral sampler over all 1000 steps (`p_sample_loop`).
- `ddim_sample`: the official strided DDIM (`ddim_sample`): time grid
  `linspace(-1, T-1, S+1)` truncated to int, x0 clamped to [-1, 1] without recomputing eps
  (`clip_x0`: True = [-1, 1], a number c = [-c, c] for scaled latents, False = no clamp),
  the last pair returning the x0 prediction; `eta=1` (the official setting) is ancestral
  sampling on the sub-grid.
- `ddim_quadratic_sample`, `ddim_logsnr_sample`, `ddim_karras_sample` (`ddim-quad`,
  `ddim-logsnr`, `ddim-karras`): the same steps on other grids (`ddim_times`): the DDIM paper's
  quadratic one, one uniform in log-SNR, and the EDM one of Karras et al. (rho 7).
- `dpm_solver_sample`: DPM-Solver++(2M) with x0 clamping; matches diffusers'
  `DPMSolverMultistepScheduler` (test_diffusion_samplers.py) and needs ~20 steps.
- `dpm_solver_sde_sample`: its stochastic form, DPM-Solver++(2M) SDE (diffusers'
  `sde-dpmsolver++`), `eta` scaling the noise.
- `sa_solver_sample` (`sa-solver`, in `sa_solver.py`): SA-Solver's stochastic Adams
  predictor-corrector, `eta` as its tau; matches diffusers' `SASolverScheduler`.

The default is DDIM with eta 1 at 8 steps on the quadratic grid (`ddim-quad`), the best measured
setting at 8 network evaluations or fewer (docs/results.md, "The sampler frontier"): below
DDIM-100's seed-to-seed spread on the demo model (mean of three seed sets 333 against 352, plain
DDIM-8 349), level with plain DDIM-8 on the sky walkthrough model (388 both, DDIM-100 373); the
deterministic solvers stay far behind the stochastic ones on both.

`SAMPLERS` registers each one with its default step count (`SamplerSpec`); the request type
`pvdm.diffusion.SamplingConfig` takes its defaults from there. `generator` is one
`torch.Generator` or a list with one per sample: with a list, every sample's noise comes from its
own generator, so outputs do not depend on the batch they were drawn in. `callback`, as in
k-diffusion, is called after every step with a dict: `step` (0-based), `total` (steps),
`t` (the timestep just denoised), `x` (the new sample) and `x0` (the clamped prediction); a
progress bar reads it, and a cancel button raises from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import torch

from pvdm.diffusion.sa_solver import SA_SOLVER_STEPS, sa_solver_sample
from pvdm.diffusion.sampler_steps import (
    Callback,
    clamp_x0,
    dpm_solver_timesteps,
    randn_like,
    report_step,
    timestep_batch,
)
from pvdm.diffusion.schedule import Latent, NoiseSchedule
from pvdm.models.latent import Generator

Denoiser: TypeAlias = Callable[[Any, torch.Tensor], Any]

DEFAULT_ETA = 1.0  # the official DDIM setting (the authors sample with eta 1)


def _zeros_like(x: Latent) -> Latent:
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else x.zeros_like()


def guided(cond_eps: Denoiser, other_eps: Denoiser, scale: float) -> Denoiser:
    """Guidance as a wrapper: `(1 + s) eps_cond - s eps_other` (both at the same x_t and t)."""

    def denoise(x: Latent, t: torch.Tensor) -> Latent:
        return (1 + scale) * cond_eps(x, t) - scale * other_eps(x, t)

    denoise.nfe = evaluations(cond_eps) + evaluations(other_eps)  # type: ignore[attr-defined]
    return denoise


def evaluations(denoiser: Denoiser) -> int:
    """Network evaluations one call of `denoiser` costs (1 unless guidance wraps it)."""
    return getattr(denoiser, "nfe", 1)


def make_denoiser(
    model: Callable[..., Any],
    *,
    cond: Any = None,
    labels: torch.Tensor | None = None,
    guidance: float = 0.0,
    class_guidance: float = 0.0,
    null_label: int | None = None,
) -> Denoiser:
    """eps(x_t, t) of `model` for one condition, with the official frame guidance and class
    classifier-free guidance wrapped around it when their scales are not 0.

    Frame guidance (official): `(1 + w) eps(x, c) - w eps(x, 0)`, only when a condition is given.
    Class guidance, around that: `(1 + s) eps_w(x, c, y) - s eps(x, c, null)`.
    `evaluations(denoiser)` says how many network calls each call costs.
    """

    def network(c: Any, y: torch.Tensor | None) -> Denoiser:
        kwargs = {"cond": c} if y is None else {"cond": c, "labels": y}
        return lambda x, t: model(x, t, **kwargs).float()

    denoise = network(cond, labels)
    if cond is not None and guidance != 0.0:
        denoise = guided(denoise, network(_zeros_like(cond), labels), guidance)
    if labels is not None and class_guidance != 0.0:
        if null_label is None:
            null_label = getattr(getattr(model, "config", None), "num_classes", None)
        if null_label is None:
            raise ValueError("class guidance needs the model's null class index")
        denoise = guided(
            denoise, network(cond, torch.full_like(labels, null_label)), class_guidance
        )
    return denoise


def _ddim_on(spacing: Spacing, doc: str, name: str) -> Callable[..., Latent]:
    """DDIM on one grid (`ddim_times`) as a sampler with the shared signature."""

    @torch.no_grad()
    def sample(
        denoiser: Denoiser,
        noise: Latent,
        schedule: NoiseSchedule,
        steps: int | None = None,
        *,
        eta: float = DEFAULT_ETA,
        generator: Generator = None,
        clip_x0: bool | float = True,
        callback: Callback | None = None,
    ) -> Latent:
        return _ddim(denoiser, noise, schedule, steps, eta, generator, clip_x0, callback, spacing)

    sample.__doc__, sample.__name__, sample.__qualname__ = doc, name, name
    return sample


ddim_sample = _ddim_on(
    "official",
    "The official strided DDIM sampler; `eta=1` is ancestral sampling on the sub-grid.",
    "ddim_sample",
)
ddim_quadratic_sample = _ddim_on(
    "quadratic",
    "DDIM on the DDIM paper's quadratic grid (`ddim_times(..., 'quadratic')`).",
    "ddim_quadratic_sample",
)
ddim_logsnr_sample = _ddim_on(
    "logsnr", "DDIM on a grid uniform in log-SNR (`ddim_times`).", "ddim_logsnr_sample"
)
ddim_karras_sample = _ddim_on(
    "karras", "DDIM on the Karras et al. (EDM) grid, rho 7 (`ddim_times`).", "ddim_karras_sample"
)


def _ddim(denoiser, noise, schedule, steps, eta, generator, clip_x0, callback, spacing):
    steps = SAMPLERS["ddim"].default_steps if steps is None else steps
    num_t = schedule.num_timesteps
    if not 1 <= steps <= num_t:
        raise ValueError(f"DDIM steps must be in [1, {num_t}], got {steps}")
    times = ddim_times(num_t, steps, spacing, schedule)
    x = noise.float()
    for i, (t, t_next) in enumerate(itertools.pairwise(times)):
        x, x0 = ddim_step(denoiser, x, schedule, t, t_next, eta, generator, clip_x0)
        report_step(callback, i, steps, t, x, x0)
    return x


Spacing: TypeAlias = Literal["official", "quadratic", "logsnr", "karras"]


def ddim_times(
    num_timesteps: int, steps: int, spacing: Spacing = "official", schedule: Any = None
) -> list[int]:
    """A DDIM grid, first to last (S + 1 points; the last, -1, stands for the clean sample).

    - official: `linspace(-1, T-1, S+1)` truncated to int and reversed (the official sampler);
    - quadratic: `(T-1) ((S-i)/S)^2` for i < S, the DDIM paper's quadratic selection (more of
      the steps at low noise);
    - logsnr: uniform in log-SNR between the first and the last step (needs `schedule`);
    - karras: the EDM grid, uniform in sigma^(1/7) (sigma = sqrt((1 - abar) / abar)) from the
      first step's sigma to the last's, each point the step of the nearest sigma (needs
      `schedule`).
    The official grid is diffusers' "trailing" spacing. Every grid starts at T-1 and falls
    strictly.
    """
    if spacing == "official":
        return torch.linspace(-1, num_timesteps - 1, steps + 1).int().tolist()[::-1]
    last = num_timesteps - 1
    if spacing == "quadratic":
        points = [round(last * ((steps - i) / steps) ** 2) for i in range(steps)]
    elif spacing in ("logsnr", "karras"):
        if schedule is None:
            raise ValueError(f"the {spacing} spacing needs the schedule")
        acp = schedule.alphas_cumprod.double()
        logsnr = (acp / (1 - acp)).log()  # falls with t
        if spacing == "logsnr":
            targets = torch.linspace(float(logsnr[last]), float(logsnr[0]), steps + 1)[:-1]
        else:  # sigma = exp(-logsnr / 2), uniform in sigma^(1/rho), rho = 7
            root_max, root_min = (float((-logsnr[i] / 14).exp()) for i in (last, 0))
            sigmas = torch.linspace(root_max, root_min, steps + 1)[:-1].pow(7)
            targets = -2 * sigmas.log()
        points = [int((logsnr - v).abs().argmin()) for v in targets.double()]
    else:
        raise ValueError(f"unknown DDIM spacing {spacing!r}")
    grid: list[int] = []
    for i, t in enumerate(points):  # strictly falling, room left for the points after it
        t = min(t, grid[-1] - 1) if grid else last
        grid.append(max(t, steps - 1 - i))
    return [*grid, -1]


def ddim_step(
    denoiser: Denoiser,
    x: Latent,
    schedule: NoiseSchedule,
    t: int,
    t_next: int,
    eta: float,
    generator: Generator,
    clip_x0: bool | float,
) -> tuple[Latent, Latent]:
    """One step of the official DDIM from t to t_next (-1: the x0 prediction itself); the new
    sample and the clamped x0 prediction."""
    acp = schedule.alphas_cumprod.to(x.device)
    t_batch = timestep_batch(x, t)
    eps = denoiser(x, t_batch)
    x0 = clamp_x0(schedule.predict_x0(x, t_batch, eps), clip_x0)
    if t_next < 0:
        return x0, x0
    alpha, alpha_next = acp[t], acp[t_next]
    sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
    c = (1 - alpha_next - sigma**2).sqrt()
    x = x0 * alpha_next.sqrt() + c * eps
    if eta > 0:
        x = x + sigma * randn_like(x, generator)
    return x, x0


@torch.no_grad()
def ddpm_sample(
    denoiser: Denoiser,
    noise: Latent,
    schedule: NoiseSchedule,
    steps: int | None = None,
    *,
    eta: float = DEFAULT_ETA,
    generator: Generator = None,
    clip_x0: bool | float = True,
    callback: Callback | None = None,
) -> Latent:
    """Official ancestral DDPM over every step: posterior mean, fixed-small variance.

    `steps` must be None or the schedule's length; `eta` is accepted for the shared signature.
    (The official `p_sample_loop` ignores guidance; here it applies when the denoiser has it.)
    """
    num_t = schedule.num_timesteps
    if steps not in (None, num_t):
        raise ValueError(f"DDPM runs all {num_t} steps; use ddim (eta=1) for {steps} steps")
    x = noise.float()
    for i, t in enumerate(range(num_t - 1, -1, -1)):
        t_batch = timestep_batch(x, t)
        eps = denoiser(x, t_batch)
        x0 = schedule.predict_x0(x, t_batch, eps)
        x0 = clamp_x0(x0, clip_x0)
        mean = (
            schedule.at("posterior_mean_coef1", t_batch, x) * x0
            + schedule.at("posterior_mean_coef2", t_batch, x) * x
        )
        if t > 0:
            log_var = schedule.at("posterior_log_variance_clipped", t_batch, x)
            x = mean + (0.5 * log_var).exp() * randn_like(x, generator)
        else:
            x = mean
        report_step(callback, i, num_t, t, x, x0)
    return x


@torch.no_grad()
def dpm_solver_sample(
    denoiser: Denoiser,
    noise: Latent,
    schedule: NoiseSchedule,
    steps: int | None = None,
    *,
    eta: float = DEFAULT_ETA,
    generator: Generator = None,
    clip_x0: bool | float = True,
    callback: Callback | None = None,
) -> Latent:
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, midpoint form, final step to sigma 0.

    Deterministic (`eta` and `generator` are accepted for the shared signature). The x0
    prediction is clamped to [-1, 1] like the official samplers (diffusers: thresholding with
    sample_max_value=1). The last step is first order, as diffusers does when the final sigma
    is zero.
    """
    steps = SAMPLERS["dpm"].default_steps if steps is None else steps
    return _dpm_solver_2m(denoiser, noise, schedule, steps, 0.0, None, clip_x0, callback)


@torch.no_grad()
def dpm_solver_sde_sample(
    denoiser: Denoiser,
    noise: Latent,
    schedule: NoiseSchedule,
    steps: int | None = None,
    *,
    eta: float = DEFAULT_ETA,
    generator: Generator = None,
    clip_x0: bool | float = True,
    callback: Callback | None = None,
) -> Latent:
    """DPM-Solver++(2M) SDE: the same multistep solver with fresh noise at every step.

    `eta` scales the noise: 1 is diffusers' `sde-dpmsolver++` (and k-diffusion's
    `sample_dpmpp_2m_sde`), 0 is the deterministic `dpm_solver_sample`. The same time grid,
    clamp and final first-order step to sigma 0.
    """
    steps = SAMPLERS["dpm-sde"].default_steps if steps is None else steps
    return _dpm_solver_2m(denoiser, noise, schedule, steps, eta, generator, clip_x0, callback)


def _dpm_solver_2m(
    denoiser: Denoiser,
    noise: Latent,
    schedule: NoiseSchedule,
    steps: int,
    eta: float,
    generator: Generator,
    clip_x0: bool | float,
    callback: Callback | None,
) -> Latent:
    """Multistep DPM-Solver++ of order 2 in VP terms (alpha_t, sigma_t, lambda = log alpha/sigma):

        x' = sigma'/sigma e^(-eta h) x + alpha' (1 - e^(-(1 + eta) h)) (D + D1 / 2)
             + sigma' sqrt(1 - e^(-2 eta h)) z,     h = lambda' - lambda,

    with D the clamped x0 prediction and D1 = (D - D_prev) / r, r = h_prev / h (0 on the first
    and the last step).
    """
    timesteps = dpm_solver_timesteps(schedule.num_timesteps, steps)
    acp = schedule.alphas_cumprod.double()
    # alpha_t, sigma_t of each grid point, then the final point at sigma = 0 (alpha = 1)
    alphas = [float(acp[t].sqrt()) for t in timesteps] + [1.0]
    sigmas = [float((1 - acp[t]).sqrt()) for t in timesteps] + [0.0]
    lambdas = [np.log(a) - np.log(s) if s > 0 else np.inf for a, s in zip(alphas, sigmas)]
    x = noise.float()
    x0_prev = None
    for i, t in enumerate(timesteps):
        eps = denoiser(x, timestep_batch(x, t))
        x0 = (x - sigmas[i] * eps) / alphas[i]
        x0 = clamp_x0(x0, clip_x0)
        if i == len(timesteps) - 1:  # to sigma 0 (h = inf): first order, x' = x0
            x = x0
        else:
            h = lambdas[i + 1] - lambdas[i]
            d = x0
            if x0_prev is not None:
                d = x0 + 0.5 * (x0 - x0_prev) / float((lambdas[i] - lambdas[i - 1]) / h)
            decay = float(np.exp(-eta * h))
            gain = -float(np.expm1(-(1 + eta) * h))
            x = (sigmas[i + 1] / sigmas[i] * decay) * x + (alphas[i + 1] * gain) * d
            if eta > 0:
                spread = sigmas[i + 1] * float(np.sqrt(-np.expm1(-2 * eta * h)))
                x = x + spread * randn_like(x, generator)
        x0_prev = x0
        report_step(callback, i, len(timesteps), t, x, x0)
    return x


Sampler: TypeAlias = Callable[..., Latent]


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its function, default steps (None: every step of the schedule,
    the only count it runs), whether it reads `eta`, and its name in charts."""

    fn: Sampler
    default_steps: int | None
    uses_eta: bool
    title: str

    def resolve_steps(self, name: str, steps: int | None, num_timesteps: int) -> int:
        """`steps` as given, else the default (capped at the schedule's length); a count this
        sampler cannot run is one clear error."""
        from pvdm.errors import ConfigError

        if self.default_steps is None:
            if steps not in (None, num_timesteps):
                raise ConfigError(
                    f"the {name} sampler runs all {num_timesteps} steps of this model; drop "
                    f"--steps, or use the ddim sampler (eta 1) for {steps} steps"
                )
            return num_timesteps
        steps = min(self.default_steps, num_timesteps) if steps is None else steps
        if not 1 <= steps <= num_timesteps:
            raise ConfigError(f"steps must lie in [1, {num_timesteps}] for this model, got {steps}")
        return steps


# Default steps, from the measured frontier (benchmarks/sampling.py; docs/results.md, "The
# sampler frontier"): the stochastic samplers at 8 network evaluations, the best setting at 8 or
# fewer; the deterministic DPM-Solver++ needs ~20 and stays behind them.
SAMPLERS: dict[str, SamplerSpec] = {
    "ddim": SamplerSpec(ddim_sample, 8, True, "DDIM"),
    "ddim-quad": SamplerSpec(ddim_quadratic_sample, 8, True, "DDIM (quadratic grid)"),
    "ddim-logsnr": SamplerSpec(ddim_logsnr_sample, 8, True, "DDIM (log-SNR grid)"),
    "ddim-karras": SamplerSpec(ddim_karras_sample, 8, True, "DDIM (Karras grid)"),
    "dpm": SamplerSpec(dpm_solver_sample, 20, False, "DPM-Solver++(2M)"),
    "dpm-sde": SamplerSpec(dpm_solver_sde_sample, 8, True, "DPM-Solver++(2M) SDE"),
    "sa-solver": SamplerSpec(sa_solver_sample, SA_SOLVER_STEPS, True, "SA-Solver"),
    "ddpm": SamplerSpec(ddpm_sample, None, False, "DDPM"),
}
