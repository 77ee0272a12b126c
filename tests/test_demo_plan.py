"""The demo's time plan: the diffusion stage gets what the measured earlier stages left."""

from __future__ import annotations

import pytest

from pvdm.demo.run import AE_SHARE, DemoState, _diffusion_budget, _spent


def test_diffusion_budget_follows_the_time_actually_spent() -> None:
    state = DemoState(minutes=10.0, done=["autoencoder", "latents"])
    state.seconds = {"autoencoder": AE_SHARE * 600, "latents": 10.0, "generation": 99.0}
    ae = AE_SHARE * 600
    # on plan: 600 s less the autoencoder's share, 10 s caching, 72 s reserved for the last stage
    assert _spent(state) == pytest.approx(ae + 10.0)
    assert _diffusion_budget(state, 600.0) == pytest.approx(600.0 - ae - 10.0 - 72.0)
    # a busy machine stretched the autoencoder by 100 s: the diffusion stage gives them back
    state.seconds["autoencoder"] += 100.0
    assert _diffusion_budget(state, 600.0) == pytest.approx(600.0 - ae - 110.0 - 72.0)
    # an unfinished stage's time is not counted (it is redone on resume)
    state.done = ["autoencoder"]
    assert _spent(state) == pytest.approx(ae + 100.0)


def test_a_stage_replans_at_half_way_from_the_rate_it_measured(monkeypatch, tmp_path) -> None:
    import time

    import pvdm.demo.run as demo_run
    from pvdm.presets import AUTOENCODER_RUNS

    calls: list[tuple[int, float]] = []
    trained = {"steps": 0}

    def fake_train(cfg, run) -> None:  # 1 ms per step: 1,000 steps/s
        time.sleep(max(cfg.train.max_steps - trained["steps"], 0) * 1e-3)
        trained["steps"] = max(trained["steps"], cfg.train.max_steps)
        calls.append((cfg.train.max_steps, cfg.train.lr_decay_frac))

    monkeypatch.setattr(demo_run, "_trained_to", lambda run, steps: trained["steps"] >= steps)
    # the calibration "measured" 200 steps/s: 1 s of budget plans 200 steps, re-planned at 100
    monkeypatch.setattr(demo_run, "_steps_per_sec", lambda run: 200.0)
    state = DemoState()
    cfg = AUTOENCODER_RUNS["debug"]()
    demo_run._train("test", fake_train, cfg, tmp_path, 1.0, state, "ae_steps")
    (calib, _), (half, half_decay), (final, final_decay) = calls
    assert (calib, half, half_decay) == (demo_run.CALIBRATION_STEPS, 100, 0.0)
    # the first half ran ~5x faster than calibrated: the rest of the second is planned at that rate
    assert 400 < final == state.ae_steps < 1_100
    assert final_decay == cfg.train.lr_decay_frac == 0.5


def test_the_autoencoder_share_follows_its_calibrated_rate() -> None:
    from pvdm.demo.run import AE_SHARE_MAX, AE_TARGET_STEPS, autoencoder_budget

    # fast: the target steps fit in less than the minimum share, which it keeps
    assert autoencoder_budget(600.0, 5.0) == pytest.approx(AE_SHARE * 600)
    # between: exactly the time of the target steps
    rate = AE_TARGET_STEPS / (0.42 * 600)
    assert autoencoder_budget(600.0, rate) == pytest.approx(0.42 * 600)
    # slow (or a stalled calibration): at most the maximum share
    assert autoencoder_budget(600.0, 1.0) == pytest.approx(AE_SHARE_MAX * 600)
    assert autoencoder_budget(600.0, 0.0) == pytest.approx(AE_SHARE_MAX * 600)


def test_a_stage_budget_can_depend_on_the_calibrated_rate(monkeypatch, tmp_path) -> None:
    import pvdm.demo.run as demo_run
    from pvdm.presets import AUTOENCODER_RUNS

    trained = {"steps": 0}
    rates: list[float] = []

    def fake_train(cfg, run) -> None:
        trained["steps"] = max(trained["steps"], cfg.train.max_steps)

    def budget(rate: float) -> float:
        rates.append(rate)
        return 8.02  # 401 steps at the calibrated 50 steps/s

    monkeypatch.setattr(demo_run, "_trained_to", lambda run, steps: trained["steps"] >= steps)
    monkeypatch.setattr(demo_run, "_steps_per_sec", lambda run: 50.0)
    # a half of 200 steps is no more than the calibration's: no re-plan, the first plan stands
    monkeypatch.setattr(demo_run, "CALIBRATION_STEPS", 200)
    state = DemoState()
    cfg = AUTOENCODER_RUNS["debug"]()
    demo_run._train("test", fake_train, cfg, tmp_path, budget, state, "ae_steps")
    assert rates == [50.0] and trained["steps"] == state.ae_steps == 401
