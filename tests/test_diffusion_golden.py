"""The diffusion recipe against the official code's golden values: training loss and DDIM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pvdm.diffusion import ddim_sample, make_denoiser
from pvdm.diffusion.schedule import NoiseSchedule, diffusion_loss

GOLDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden" / "official"


@pytest.fixture(scope="module")
def golden():
    path = GOLDEN / "unet_small.safetensors"
    if not path.is_file():
        pytest.skip(f"golden file absent: {path}")
    from safetensors.torch import load_file

    from pvdm.convert import official_unet
    from pvdm.models.latent import LatentShape, TriplaneLatent

    shape = LatentShape(4, 16, 32, 32)

    tensors = load_file(path)
    state = {
        k.removeprefix("state."): v.float() for k, v in tensors.items() if k.startswith("state.")
    }
    config = json.loads((GOLDEN / "configs.json").read_text())["configs"]["unet_small"]
    unet = official_unet(state, config)

    def latent(flat):
        return TriplaneLatent.unpack(flat, shape)

    return tensors, unet, latent


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_training_loss_matches_official(golden) -> None:
    tensors, unet, latent = golden
    schedule = NoiseSchedule()
    x0 = tensors["loss.x0"]
    noise = tensors["loss.noise"]
    t = tensors["input.timesteps"]
    with torch.no_grad():
        xt = schedule.q_sample(x0, t, noise)
        eps = unet(latent(xt), t, cond=latent(tensors["input.cond"]))
        loss = diffusion_loss(eps.pack(), noise)
    assert abs(loss.item() - tensors["loss.value"].item()) / tensors["loss.value"].item() < 1e-5


def test_ddim_four_steps_matches_official(golden) -> None:
    tensors, unet, latent = golden
    denoiser = make_denoiser(unet, cond=latent(tensors["input.cond"]))
    out = ddim_sample(denoiser, latent(tensors["ddim.x_T"]), NoiseSchedule(), 4, eta=0.0)
    assert _rel(out.pack(), tensors["ddim.sample_4steps_eta0_cond"]) < 1e-5


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_frame_guidance_matches_the_official_formula(golden, w) -> None:
    # official: (1 + w) eps(x, c) - w eps(x, 0), from the golden conditional/unconditional eps
    tensors, unet, latent = golden
    denoiser = make_denoiser(unet, cond=latent(tensors["input.cond"]), guidance=w)
    with torch.no_grad():
        eps = denoiser(latent(tensors["input.latent"]), tensors["input.timesteps"]).pack()
    expected = (1 + w) * tensors["output.eps_cond"] - w * tensors["output.eps_uncond"]
    assert _rel(eps, expected) < 1e-5
    assert _rel(eps, tensors["output.eps_cond"]) > 1e-3  # guidance changed the prediction
