"""Noise schedule and samplers: golden schedule, official time grids, diffusers equivalence,
per-sample seeding."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pvdm.diffusion.sa_solver import adams_coefficients, sa_solver_sample
from pvdm.diffusion.samplers import (
    ddim_sample,
    ddpm_sample,
    dpm_solver_sample,
    dpm_solver_sde_sample,
    dpm_solver_timesteps,
    randn_like,
)
from pvdm.diffusion.schedule import NoiseSchedule, diffusion_loss

S = NoiseSchedule()
GOLDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden" / "official"


def _toy_model():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 8, generator=g) * 0.3

    def model(x, t, cond=None):
        return torch.tanh(torch.einsum("ij,bcj->bci", w, x) * (1 + t.float().view(-1, 1, 1) / 1000))

    return model


def test_schedule_matches_official_golden() -> None:
    path = GOLDEN / "unet_small.safetensors"
    if not path.is_file():
        pytest.skip(f"golden file absent: {path}")
    from safetensors.torch import load_file

    golden = load_file(path)
    s = NoiseSchedule()
    torch.testing.assert_close(s.betas, golden["schedule.betas"], rtol=0, atol=0)
    torch.testing.assert_close(s.alphas_cumprod, golden["schedule.alphas_cumprod"], rtol=0, atol=0)
    assert s.sqrt_alphas_cumprod[-1].item() == pytest.approx(0.0119, abs=1e-4)


def test_ddim_uses_the_official_time_grid(monkeypatch) -> None:
    seen = []

    def model(x, t, cond=None):
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    ddim_sample(model, torch.randn(1, 2, 3), NoiseSchedule(), 4)
    assert seen == [999, 749, 499, 249]
    seen.clear()
    ddim_sample(model, torch.randn(1, 2, 3), NoiseSchedule(), 100)
    assert seen[:3] == [999, 989, 979] and seen[-1] == 9
    seen.clear()
    ddim_sample(model, torch.randn(1, 2, 3), NoiseSchedule(), 400)
    assert seen[:3] == [999, 996, 994] and seen[-1] == 1


def test_ddim_with_zero_noise_prediction_returns_clamped_x0() -> None:
    # eps = 0: the first x0 is x_T / sqrt(acp_999); later steps keep x0 fixed
    s = NoiseSchedule()
    x_t = torch.full((1, 1, 4), 0.005)
    out = ddim_sample(lambda x, t: torch.zeros_like(x), x_t, s, 4, eta=0.0)
    expected = (x_t / s.sqrt_alphas_cumprod[-1]).clamp(-1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_dpm_solver_matches_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")
    model = _toy_model()
    sched = NoiseSchedule()
    for steps in (5, 20):
        noise = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(steps))
        ours = dpm_solver_sample(model, noise, sched, steps)
        ref = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            trained_betas=sched.betas.double().numpy(),
            algorithm_type="dpmsolver++",
            solver_order=2,
            thresholding=True,
            sample_max_value=1.0,
            final_sigmas_type="zero",
        )
        ref.set_timesteps(steps)
        assert ref.timesteps.tolist() == dpm_solver_timesteps(1000, steps)
        x = noise.clone()
        for t in ref.timesteps:
            x = ref.step(model(x, torch.full((2,), int(t))), t, x).prev_sample
        assert ((ours - x).norm() / x.norm()).item() < 1e-5


def test_sa_solver_matches_diffusers_noise_for_noise() -> None:
    diffusers = pytest.importorskip("diffusers")
    model = _toy_model()
    sched = NoiseSchedule()
    for tau in (0.0, 0.5, 1.0):
        for steps in (1, 2, 3, 8):
            noise = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(steps))
            ours = sa_solver_sample(
                model, noise, sched, steps, eta=tau, generator=torch.Generator().manual_seed(7)
            )
            ref = diffusers.SASolverScheduler(
                num_train_timesteps=1000,
                trained_betas=sched.betas.double().numpy(),
                thresholding=True,  # with sample_max_value 1: the clamp to [-1, 1]
                sample_max_value=1.0,
                tau_func=lambda t, tau=tau: tau,
            )
            ref.set_timesteps(steps)
            g = torch.Generator().manual_seed(7)
            x = noise.clone()
            for t in ref.timesteps:
                x = ref.step(model(x, torch.full((2,), int(t))), t, x, generator=g).prev_sample
            assert ((ours - x).norm() / x.norm()).item() < 1e-5, (tau, steps)


def test_sa_solver_coefficients_integrate_polynomials_exactly() -> None:
    # the Lagrange basis sums to 1, so the coefficients sum to the integral of e^(s l)
    nodes, a, b, tau = [-1.0, -1.7, -2.2], -1.0, 0.3, 0.7
    s = 1 + tau**2
    coefficients = adams_coefficients(nodes, a, b, tau)
    assert sum(coefficients) == pytest.approx((math.exp(s * b) - math.exp(s * a)) / s, rel=1e-12)
    # and sum_j b_j nodes_j = the integral of e^(s l) l (exact for degree <= 2)
    grid = np.linspace(a, b, 200_001)
    exact = np.trapezoid(np.exp(s * grid) * grid, grid)
    assert sum(c * n for c, n in zip(coefficients, nodes)) == pytest.approx(exact, rel=1e-8)


@pytest.mark.parametrize(
    "sampler", [ddim_sample, dpm_solver_sample, dpm_solver_sde_sample, sa_solver_sample]
)
def test_samples_do_not_depend_on_batch_composition(sampler) -> None:
    model = _toy_model()
    seeds = [11, 12, 13]
    noise = torch.cat(
        [randn_like(torch.empty(1, 3, 8), torch.Generator().manual_seed(s)) for s in seeds]
    )
    gens = [torch.Generator().manual_seed(100 + s) for s in seeds]
    batch = sampler(model, noise, NoiseSchedule(), 10, eta=1.0, generator=gens)
    for i, s in enumerate(seeds):
        single = sampler(
            model,
            noise[i : i + 1],
            NoiseSchedule(),
            10,
            eta=1.0,
            generator=[torch.Generator().manual_seed(100 + s)],
        )
        torch.testing.assert_close(single, batch[i : i + 1], rtol=1e-6, atol=1e-6)


def test_ddpm_runs_every_step_and_refuses_fewer() -> None:
    calls = []

    def model(x, t, cond=None):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    g = torch.Generator().manual_seed(0)
    out = ddpm_sample(model, torch.randn(1, 1, 4), NoiseSchedule(), generator=g)
    assert calls == list(range(999, -1, -1)) and out.abs().max() <= 1.0
    with pytest.raises(ValueError, match="all 1000 steps"):
        ddpm_sample(model, torch.randn(1, 1, 4), NoiseSchedule(), 50)


def test_ddpm_recovers_a_point_mass() -> None:
    # data is a point mass at x0*: the optimal eps-predictor is (x_t - sqrt(acp) x0*) / sqrt(1-acp)
    s = NoiseSchedule()
    target = torch.tensor([[[0.3, -0.5, 0.8]]])

    def model(x, t, cond=None):
        a = s.at("sqrt_alphas_cumprod", t, x)
        b = s.at("sqrt_one_minus_alphas_cumprod", t, x)
        return (x - a * target) / b

    g = torch.Generator().manual_seed(0)
    out = ddpm_sample(model, torch.randn(1, 1, 3, generator=g), s, generator=g)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)
    out = dpm_solver_sample(model, torch.randn(1, 1, 3, generator=g), s, 10)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)


def test_loss_is_mean_over_positions_then_batch() -> None:
    eps = torch.tensor([[[1.0, 1.0]], [[0.0, 2.0]]])
    noise = torch.zeros_like(eps)
    assert diffusion_loss(eps, noise, "l2").item() == pytest.approx((1.0 + 2.0) / 2)
    assert diffusion_loss(eps, noise, "l1").item() == pytest.approx((1.0 + 1.0) / 2)


def test_samplers_share_one_signature_and_the_defaults() -> None:
    import inspect

    from pvdm.diffusion import DEFAULT_ETA, SAMPLERS, SamplingConfig

    names = None
    for spec in SAMPLERS.values():
        params = inspect.signature(spec.fn).parameters
        names = names or list(params)
        assert list(params) == names
        assert params["eta"].default == DEFAULT_ETA and params["callback"].default is None
    assert names[:4] == ["denoiser", "noise", "schedule", "steps"]
    assert SamplingConfig().eta == DEFAULT_ETA and SamplingConfig().steps is None
    seen = []
    ddim_sample(lambda x, t: seen.append(1) or torch.zeros_like(x), torch.zeros(1, 1, 2), S)
    assert len(seen) == SAMPLERS["ddim"].default_steps


@pytest.mark.parametrize("name", ["ddim", "ddim-quad", "ddim-logsnr", "dpm", "dpm-sde", "ddpm"])
def test_every_sampler_reports_each_step_to_the_callback(name) -> None:
    from pvdm.diffusion import SAMPLERS

    spec = SAMPLERS[name]
    steps = spec.resolve_steps(name, 5 if spec.default_steps else None, S.num_timesteps)
    seen: list[dict] = []
    out = spec.fn(
        lambda x, t: 0.1 * x, torch.ones(2, 1, 3), S, steps, eta=1.0,
        generator=torch.Generator().manual_seed(0), callback=seen.append,
    )  # fmt: skip
    assert [i["step"] for i in seen] == list(range(steps))
    assert all(i["total"] == steps for i in seen)
    assert [i["t"] for i in seen] == sorted((i["t"] for i in seen), reverse=True)
    assert torch.equal(seen[-1]["x"], out)
    assert all(i["x0"].abs().max() <= 1 for i in seen)  # the clamped prediction


@pytest.mark.parametrize(
    ("sampler", "steps"), [(ddim_sample, 7), (ddpm_sample, None), (dpm_solver_sample, 7)]
)
def test_a_triplane_latent_samples_like_its_packed_tensor(sampler, steps) -> None:
    from pvdm.models import LatentShape, randn_latent

    z = randn_latent(2, LatentShape(2, 3, 4, 5), torch.Generator().manual_seed(0))

    def gens():
        return [torch.Generator().manual_seed(s) for s in (1, 2)]

    def eps(x, t):  # a latent takes one value per sample as a [B] tensor
        return x * (0.2 + t.float() / 2000)

    def eps_packed(x, t):
        return x * (0.2 + t.float().view(-1, 1, 1) / 2000)

    out = sampler(eps, z, S, steps, eta=1.0, generator=gens())
    expected = sampler(eps_packed, z.pack(), S, steps, eta=1.0, generator=gens())
    assert torch.equal(out.pack(), expected)


def test_dpm_solver_sde_matches_diffusers_noise_for_noise() -> None:
    diffusers = pytest.importorskip("diffusers")
    model = _toy_model()
    sched = NoiseSchedule()
    for steps in (4, 12):
        noise = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(steps))
        ours = dpm_solver_sde_sample(
            model, noise, sched, steps, eta=1.0, generator=torch.Generator().manual_seed(7)
        )
        ref = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            trained_betas=sched.betas.double().numpy(),
            algorithm_type="sde-dpmsolver++",
            solver_order=2,
            thresholding=True,
            sample_max_value=1.0,
            final_sigmas_type="zero",
        )
        ref.set_timesteps(steps)
        g = torch.Generator().manual_seed(7)
        x = noise.clone()
        for t in ref.timesteps:
            x = ref.step(model(x, torch.full((2,), int(t))), t, x, generator=g).prev_sample
        assert ((ours - x).norm() / x.norm()).item() < 1e-5
    # eta 0 is the deterministic solver
    noise = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        dpm_solver_sde_sample(model, noise, sched, 6, eta=0.0),
        dpm_solver_sample(model, noise, sched, 6),
    )


@pytest.mark.parametrize("spacing", ["official", "quadratic", "logsnr", "karras"])
@pytest.mark.parametrize("steps", [1, 2, 8, 50, 1000])
def test_ddim_grids_start_at_the_last_step_and_fall_strictly(spacing, steps) -> None:
    from pvdm.diffusion.samplers import ddim_times

    grid = ddim_times(1000, steps, spacing, S)
    assert len(grid) == steps + 1 and grid[0] == 999 and grid[-1] == -1
    assert all(a > b for a, b in itertools.pairwise(grid))


def test_ddim_grids_values() -> None:
    from pvdm.diffusion.samplers import ddim_times

    assert ddim_times(1000, 4) == [999, 749, 499, 249, -1]  # the official truncation
    assert ddim_times(1000, 4, "quadratic") == [999, 562, 250, 62, -1]  # 999 (k/4)^2
    grid = ddim_times(1000, 4, "logsnr", S)
    acp = S.alphas_cumprod.double()
    logsnr = (acp / (1 - acp)).log()[grid[:-1]]
    steps = logsnr[1:] - logsnr[:-1]  # equal log-SNR steps, up to the integer grid
    assert float(steps.max() - steps.min()) < 0.05 * float(steps.mean())
    # Karras: equal steps in sigma^(1/7), sigma = sqrt((1 - abar) / abar), up to the integer grid
    grid = ddim_times(1000, 8, "karras", S)
    root = ((1 - acp) / acp).sqrt().pow(1 / 7)[grid[:-1]]
    steps = root[:-1] - root[1:]
    assert float(steps.max() - steps.min()) < 0.05 * float(steps.mean())
    with pytest.raises(ValueError, match="spacing"):
        ddim_times(1000, 4, "cosine")
    with pytest.raises(ValueError, match="schedule"):
        ddim_times(1000, 4, "karras")


def test_a_regridded_ddim_is_ddim_on_its_grid(monkeypatch) -> None:
    from pvdm.diffusion import samplers

    seen = []
    samplers.ddim_quadratic_sample(
        lambda x, t: seen.append(int(t[0])) or 0.1 * x, torch.ones(1, 2), S, 4, eta=0.0
    )
    assert seen == [999, 562, 250, 62]
