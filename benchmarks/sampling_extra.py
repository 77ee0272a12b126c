"""`benchmarks/sampling.py` with samplers that were measured but are not shipped.

Registers three more names for `--grid`, then runs `benchmarks/sampling.py` with the same
arguments (same points log, same reference):

- `euler-churn`, `heun-churn`: the stochastic sampler of Karras et al. 2022 (EDM, Algorithm 2)
  on this model's VP schedule: sigma = sqrt((1 - abar) / abar), the Karras grid (rho 7) from the
  schedule's largest sigma to its smallest and then 0, churn gamma = sqrt(2) - 1 times `eta`
  (S_churn large, S_noise 1), the network queried at the fractional timestep whose log-sigma
  interpolates the schedule's (a sigma beyond the schedule's largest, as the first churned step
  reaches, is queried at the last timestep), the x0 prediction clamped like every sampler. Euler
  costs one evaluation a step; Heun two but the last, so `steps` counts evaluations and an even
  count runs one fewer. Without the clamp both converge to the DDIM eta-0 solution (on the demo
  model: 200 Euler steps and 99 Heun evaluations against DDIM-200 eta 0, mean squared
  difference 1e-4 and 3e-4 of a latent whose mean square is 3.6; on Gaussian data to the
  closed-form sample: tests/test_sampling_extra.py).
- `unipc`: diffusers' `UniPCMultistepScheduler` (bh2, order 2, data prediction, trailing
  spacing, the [-1, 1] x0 clamp as its thresholding with a maximum of 1), deterministic.

    python benchmarks/sampling_extra.py --model DIR/diffusion --data synthetic --num 128 \\
        --grid "unipc:4,8:0;euler-churn:4,8:1;heun-churn:7,15:1" --reference-point unipc:8:0 \\
        --spread 1 --reference-cache benchmarks/results/reference-synthetic-128.pt \\
        --out benchmarks/results/sampling_demo_extra.json
"""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import torch

from pvdm.diffusion import samplers
from pvdm.diffusion.sampler_steps import clamp_x0, randn_like, report_step
from pvdm.models.latent import TriplaneLatent

CHURN = math.sqrt(2) - 1  # the largest churn EDM allows a step


def _vp_denoiser(denoiser, schedule, clip_x0):
    """D(x, sigma): the clamped x0 of the VE-scaled sample x = x_t / sqrt(abar_t)."""
    acp = schedule.alphas_cumprod.double()
    log_sigmas = ((1 - acp) / acp).sqrt().log()  # rising with t
    lo, hi = float(log_sigmas[0]), float(log_sigmas[-1])

    def timestep(sigma: float) -> float:
        ls = min(max(math.log(sigma), lo), hi)
        i = int(torch.searchsorted(log_sigmas, torch.tensor(ls, dtype=torch.float64)))
        i = min(max(i, 1), len(log_sigmas) - 1)
        a, b = float(log_sigmas[i - 1]), float(log_sigmas[i])
        return i - 1 + ((ls - a) / (b - a) if b > a else 0.0)

    def denoise(x, sigma: float):
        t = torch.full((len(x),), timestep(sigma), dtype=torch.float32)
        eps = denoiser(x * (1 / math.sqrt(1 + sigma**2)), t)
        return clamp_x0(x - sigma * eps, clip_x0)

    return denoise, math.exp(lo), math.exp(hi)


def edm_sampler(heun: bool):
    """The EDM sampler with churn (`eta` scales gamma), Euler or Heun steps."""

    @torch.no_grad()
    def sample(denoiser, noise, schedule, steps=None, *, eta=1.0, generator=None,
               clip_x0=True, callback=None):  # fmt: skip
        denoise, sigma_min, sigma_max = _vp_denoiser(denoiser, schedule, clip_x0)
        n = (steps + 1) // 2 if heun else steps
        ramp = torch.linspace(0, 1, n, dtype=torch.float64)
        rho = 7.0
        sigmas = (
            sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
        ) ** rho
        sigmas = [*sigmas.tolist(), 0.0]
        gamma = CHURN * eta
        x = noise.float() * math.sqrt(1 + sigma_max**2)
        for i in range(n):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            sigma_hat = sigma * (1 + gamma)
            if gamma > 0:
                x = x + randn_like(x, generator) * math.sqrt(sigma_hat**2 - sigma**2)
            x0 = denoise(x, sigma_hat)
            d = (x - x0) * (1 / sigma_hat)
            x_next = x + d * (sigma_next - sigma_hat)
            if heun and sigma_next > 0:
                d_next = (x_next - denoise(x_next, sigma_next)) * (1 / sigma_next)
                x_next = x + (d + d_next) * (0.5 * (sigma_next - sigma_hat))
            x = x_next
            report_step(callback, i, n, i, x, x0)
        return x

    return sample


@torch.no_grad()
def unipc_sample(denoiser, noise, schedule, steps=None, *, eta=0.0, generator=None, clip_x0=True,
           callback=None):  # fmt: skip
    import diffusers

    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=schedule.num_timesteps,
        trained_betas=schedule.betas.double().numpy(),
        solver_order=2,
        prediction_type="epsilon",
        thresholding=clip_x0 is not False,
        sample_max_value=1.0,
        dynamic_thresholding_ratio=1.0,
        predict_x0=True,
        solver_type="bh2",
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(steps)
    shape = noise.shape
    x = noise.float().pack()
    for i, t in enumerate(scheduler.timesteps):
        eps = denoiser(TriplaneLatent.unpack(x, shape), torch.full((x.shape[0],), int(t)))
        x = scheduler.step(eps.pack(), t, x).prev_sample
        latent = TriplaneLatent.unpack(x, shape)
        report_step(callback, i, len(scheduler.timesteps), int(t), latent, latent)
    return TriplaneLatent.unpack(x, shape)


EXTRA = {
    "euler-churn": samplers.SamplerSpec(edm_sampler(heun=False), 8, True, "EDM Euler, churn"),
    "heun-churn": samplers.SamplerSpec(edm_sampler(heun=True), 7, True, "EDM Heun, churn"),
    "unipc": samplers.SamplerSpec(unipc_sample, 8, False, "UniPC (diffusers)"),
}

if __name__ == "__main__":
    samplers.SAMPLERS.update(EXTRA)  # only in this process: the shipped registry stays as it is
    sys.argv = [str(Path(__file__).with_name("sampling.py")), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
