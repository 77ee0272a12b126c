"""benchmarks/sampling_extra.py: the measured-but-not-shipped samplers solve the right equations.

On Gaussian data x0 ~ N(0, s^2) the exact noise prediction is known in closed form, and so is
the probability-flow ODE: x / sqrt(s^2 + sigma^2) stays constant (VE scaling, x = x_t / sqrt(abar),
sigma^2 = (1 - abar) / abar). The deterministic forms must land on it; with churn the samples
must have the data's spread.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from pvdm.diffusion import samplers
from pvdm.diffusion.schedule import NoiseSchedule
from pvdm.models.latent import LatentShape, randn_latent

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sampling_extra.py"
DATA_STD = 0.5


def _extra():
    spec = importlib.util.spec_from_file_location("sampling_extra", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gaussian_denoiser(schedule: NoiseSchedule):
    """Exact eps of x_t for x0 ~ N(0, DATA_STD^2), at fractional t (log-sigma interpolated)."""
    acp = schedule.alphas_cumprod.double()
    log_sigmas = ((1 - acp) / acp).sqrt().log()

    def denoise(x, t):
        i = t.double().floor().long().clamp(max=len(acp) - 2)
        w = t.double() - i
        sigma = ((1 - w) * log_sigmas[i] + w * log_sigmas[i + 1]).exp()
        a = 1 / (1 + sigma**2)  # abar at that sigma
        scale = ((1 - a).sqrt() / (a * DATA_STD**2 + 1 - a)).float()
        return x.map(lambda p: p * scale.view(-1, *[1] * (p.ndim - 1)))

    return denoise


def _ode_sample(noise, schedule: NoiseSchedule):
    """The exact ODE from the VP noise at t = T-1 to the schedule's smallest sigma, then the
    x0 prediction there (every sampler's last step)."""
    acp = schedule.alphas_cumprod.double()
    s2, lo2, hi2 = DATA_STD**2, float((1 - acp[0]) / acp[0]), float((1 - acp[-1]) / acp[-1])
    at_lo = math.sqrt(1 + hi2) * math.sqrt(s2 + lo2) / math.sqrt(s2 + hi2)
    return noise * (at_lo * s2 / (s2 + lo2))


def test_extra_samplers_are_not_registered_by_import() -> None:
    before = set(samplers.SAMPLERS)
    extra = _extra()
    assert set(extra.EXTRA) == {"euler-churn", "heun-churn", "unipc"}
    assert set(samplers.SAMPLERS) == before


@pytest.mark.parametrize(
    ("name", "steps", "rtol"),
    [("euler-churn", 2000, 0.003), ("heun-churn", 199, 0.003), ("unipc", 500, 0.005)],
)
def test_deterministic_forms_land_on_the_ode_sample(name: str, steps: int, rtol: float) -> None:
    if name == "unipc":
        pytest.importorskip("diffusers")
    schedule = NoiseSchedule()
    noise = randn_latent(4, LatentShape(2, 3, 4, 4), torch.Generator().manual_seed(0))
    fn = _extra().EXTRA[name].fn
    out = fn(_gaussian_denoiser(schedule), noise, schedule, steps, eta=0.0, clip_x0=False)
    expected = _ode_sample(noise, schedule).pack()
    err = (out.pack() - expected).norm() / expected.norm()
    assert err < rtol, f"{name}: relative error {float(err):.2e}"
    # a few steps are far from it: the check can fail
    coarse = fn(_gaussian_denoiser(schedule), noise, schedule, 3, eta=0.0, clip_x0=False)
    assert (coarse.pack() - expected).norm() / expected.norm() > 2 * rtol


def test_heun_with_churn_samples_have_the_data_spread() -> None:
    """EDM's Algorithm 2 with the largest churn at every step: each step first raises the noise
    by 41%, so only the second-order steps converge to the data's distribution (Euler steps keep
    a bias: 0.46 for 0.5 here at any step count)."""
    schedule = NoiseSchedule()
    generators = [torch.Generator().manual_seed(i) for i in range(64)]
    noise = randn_latent(64, LatentShape(4, 4, 8, 8), generators)
    fn = _extra().EXTRA["heun-churn"].fn
    denoiser = _gaussian_denoiser(schedule)
    out = fn(denoiser, noise, schedule, 201, eta=1.0, clip_x0=False, generator=generators)
    assert abs(float(out.pack().std()) - DATA_STD) < 0.03 * DATA_STD
    # the churn draws its own noise: far from the deterministic path's sample
    ode = _ode_sample(noise, schedule).pack()
    assert (out.pack() - ode).abs().mean() > 0.1 * DATA_STD
    # with 21 evaluations it is measurably off: the check can fail
    few = fn(denoiser, noise, schedule, 21, eta=1.0, clip_x0=False, generator=generators)
    assert abs(float(few.pack().std()) - DATA_STD) > 0.03 * DATA_STD
