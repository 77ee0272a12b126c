"""SA-Solver (Xue et al. 2023): stochastic Adams predictor-corrector in data prediction.

On the VP schedule (alpha_t, sigma_t, lambda = log alpha/sigma), with the clamped x0 predictions
D_j of the last steps and a stochasticity tau (`eta`; 0 is the probability-flow ODE, 1 the
reverse SDE), one step from s to t (h = lambda_t - lambda_s) is

    x_t = e^(-tau^2 h) sigma_t / sigma_s x_s + (1 + tau^2) sigma_t e^(-tau^2 lambda_t)
          sum_j b_j D_j + sigma_t sqrt(1 - e^(-2 tau^2 h)) z,
    b_j = integral over [lambda_s, lambda_t] of e^((1 + tau^2) l) L_j(l) dl,

L_j the Lagrange basis polynomials through the lambdas of the D_j used. The predictor uses the
D of the current and the previous points; the corrector redoes the last step with the new point's
D as well (and the same z), so it costs no extra network evaluation. Orders 2 and 2, lower orders
at the start and at the end, the final step to the first training timestep's noise level, and
the order-2 adjustment of the reference code: the same function as diffusers'
`SASolverScheduler` with a constant `tau_func` (tests/test_diffusion_samplers.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

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

SA_SOLVER_STEPS = 8  # default steps (the registry's)
PREDICTOR_ORDER = 2
CORRECTOR_ORDER = 2


def _polynomial_integral(k: int, a: float, b: float, s: float) -> float:
    """Integral over [a, b] of e^(s l) l^k dl (closed form: e^u times a polynomial in u = s l)."""

    def antiderivative(u: float) -> float:
        # integral of e^u u^k du = e^u sum_j (-1)^j k! / (k - j)! u^(k - j)
        poly = sum((-1) ** j * math.perm(k, j) * u ** (k - j) for j in range(k + 1))
        return math.exp(u) * poly

    return (antiderivative(s * b) - antiderivative(s * a)) / s ** (k + 1)


def adams_coefficients(nodes: list[float], a: float, b: float, tau: float) -> list[float]:
    """b_j for the D_j at lambda `nodes[j]`: the integral over [a, b] of e^((1 + tau^2) l) times
    the j-th Lagrange basis polynomial through `nodes`."""
    s = 1 + tau**2
    out = []
    for j, node in enumerate(nodes):
        others = [m for i, m in enumerate(nodes) if i != j]
        basis = np.atleast_1d(np.poly(others)) / np.prod([node - m for m in others])  # x^k first
        degree = len(basis) - 1
        out.append(
            sum(float(c) * _polynomial_integral(degree - i, a, b, s) for i, c in enumerate(basis))
        )
    return out


@torch.no_grad()
def sa_solver_sample(
    denoiser: Callable[[Any, torch.Tensor], Any],
    noise: Latent,
    schedule: NoiseSchedule,
    steps: int | None = None,
    *,
    eta: float = 1.0,
    generator: Generator = None,
    clip_x0: bool | float = True,
    callback: Callback | None = None,
) -> Latent:
    """SA-Solver, stochastic Adams orders 2 / 2 (module docstring), `eta` as its tau (constant
    over the grid), on diffusers' "linspace" grid; x0 clamped as the official samplers do."""
    steps = SA_SOLVER_STEPS if steps is None else steps
    timesteps = dpm_solver_timesteps(schedule.num_timesteps, steps)
    acp = schedule.alphas_cumprod.double()
    points = [*timesteps, 0]  # the last step ends at the first training timestep's noise level
    alphas = [float(acp[t].sqrt()) for t in points]
    sigmas = [float((1 - acp[t]).sqrt()) for t in points]
    lambdas = [math.log(a) - math.log(s) for a, s in zip(alphas, sigmas)]
    tau = float(eta)
    s = 1 + tau**2

    def update(x: Latent, i: int, j: int, history: list, noise_j: Latent | None, corrector: bool):
        """x at point i to point j with the D of `history` (newest last) at points i, i-1, ...
        (predictor) or j, i, ... (corrector)."""
        h = lambdas[j] - lambdas[i]
        order = len(history)
        first = j if corrector else i
        nodes = [lambdas[first - m] for m in range(order)]
        b = adams_coefficients(nodes, lambdas[i], lambdas[j], tau)
        if order == 2:  # the reference code's O(h^3) adjustment for few-step sampling
            tail = (h * s - 1 + math.exp(-s * h)) / s**2
            if corrector:
                extra = math.exp(s * lambdas[j]) * (h / 2 - tail / h)
            else:
                extra = math.exp(s * lambdas[j]) * (h**2 / 2 - tail) / (lambdas[i] - lambdas[i - 1])
            b[0], b[1] = b[0] + extra, b[1] - extra
        gain = s * sigmas[j] * math.exp(-(tau**2) * lambdas[j])
        out = (math.exp(-(tau**2) * h) * sigmas[j] / sigmas[i]) * x
        for m, coefficient in enumerate(b):
            out = out + (gain * coefficient) * history[-(m + 1)]
        if noise_j is not None:  # None when tau is 0
            out = out + (sigmas[j] * math.sqrt(-math.expm1(-2 * tau**2 * h))) * noise_j
        return out

    x = noise.float()
    history: list = []  # clamped x0 predictions, oldest first
    last = None  # (x before the last predictor step, its noise, the corrector's order)
    for i, t in enumerate(timesteps):
        eps = denoiser(x, timestep_batch(x, t))
        x0 = clamp_x0((x - sigmas[i] * eps) / alphas[i], clip_x0)
        if last is not None:  # correct the last step with this point's prediction too
            x_prev, z_prev, order = last
            x = update(x_prev, i - 1, i, [*history, x0][-order:], z_prev, corrector=True)
        history = [*history, x0][-max(PREDICTOR_ORDER, CORRECTOR_ORDER - 1) :]
        done = min(i, max(PREDICTOR_ORDER, CORRECTOR_ORDER - 1))  # earlier points available
        p_order = min(PREDICTOR_ORDER, steps - i, done + 1)
        c_order = min(CORRECTOR_ORDER, steps - i + 1, done + 2)
        z = randn_like(x, generator) if tau > 0 else None
        last = (x, z, c_order)
        x = update(x, i, i + 1, history[-p_order:], z, corrector=False)
        report_step(callback, i, len(timesteps), t, x, x0)
    return x
