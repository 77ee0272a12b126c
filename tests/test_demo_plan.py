"""The demo's time plan: the diffusion stage gets what the measured earlier stages left."""

from __future__ import annotations

import pytest

from pvdm.demo.run import AE_SHARE, DemoState, _diffusion_budget, _spent


def test_diffusion_budget_follows_the_time_actually_spent() -> None:
    state = DemoState(minutes=10.0, done=["autoencoder", "latents"])
    state.seconds = {"autoencoder": AE_SHARE * 600, "latents": 10.0, "generation": 99.0}
    # on plan: 600 s less 252 s autoencoder, 10 s caching, 72 s reserved for the last stage
    assert _spent(state) == pytest.approx(262.0)
    assert _diffusion_budget(state, 600.0) == pytest.approx(266.0)
    # a busy machine stretched the autoencoder by 100 s: the diffusion stage gives them back
    state.seconds["autoencoder"] += 100.0
    assert _diffusion_budget(state, 600.0) == pytest.approx(166.0)
    # an unfinished stage's time is not counted (it is redone on resume)
    state.done = ["autoencoder"]
    assert _spent(state) == pytest.approx(352.0)
