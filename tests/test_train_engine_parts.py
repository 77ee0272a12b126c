"""Engine building blocks: EMA schedule, training-state files, stop requests, stats lines."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch import nn

from pvdm.errors import ConfigError
from pvdm.runs import RunFolder
from pvdm.runtime import local_batch_size
from pvdm.seeds import mix_seed, step_seed
from pvdm.train.checkpoint import (
    load_latest_training_state,
    load_training_state,
    save_training_state,
)
from pvdm.train.config import TrainConfig
from pvdm.train.ema import EMA
from pvdm.train.interrupt import StopRequest
from pvdm.train.monitor import Monitor, format_duration


def test_ema_matches_litema_warmup_formula() -> None:
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.9999, every=25)
    start = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not ema.maybe_update(model, step=24)
    assert ema.maybe_update(model, step=25)
    # first update: n = 1, decay = min(0.9999, 2 / 11)
    d = 2 / 11
    expected = d * start + (1 - d) * model.weight.detach()
    torch.testing.assert_close(ema.model.weight, expected, rtol=0, atol=1e-6)
    assert ema.num_updates == 1
    ema.update(model)
    assert ema.current_decay() == pytest.approx(4 / 13)
    # the decay saturates at the configured value
    ema.num_updates = 10**6
    assert ema.current_decay() == pytest.approx(0.9999)


def test_ema_state_round_trip() -> None:
    model = nn.Linear(3, 2)
    ema = EMA(model)
    ema.update(model)
    other = EMA(nn.Linear(3, 2))
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1
    torch.testing.assert_close(other.model.weight, ema.model.weight, rtol=0, atol=0)


def test_training_states_keep_last_n_and_load_with_weights_only(tmp_path) -> None:
    run = RunFolder(tmp_path / "run")
    run.create()
    for step in (10, 20, 30, 40):
        save_training_state(run, step, {"step": step, "w": torch.full((2,), float(step))}, keep=2)
    assert [s for s, _ in run.states()] == [30, 40]
    assert not list(run.checkpoints.glob("*.tmp"))
    state = load_latest_training_state(run)
    assert state["step"] == 40 and state["w"].tolist() == [40.0, 40.0]


def test_damaged_latest_state_falls_back_to_previous(tmp_path) -> None:
    run = RunFolder(tmp_path)
    run.create()
    save_training_state(run, 1, {"step": 1}, keep=5)
    path = save_training_state(run, 2, {"step": 2}, keep=5)
    path.write_bytes(path.read_bytes()[:10])  # truncated by a failing disk
    assert load_latest_training_state(run)["step"] == 1


def test_training_state_refuses_code(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "state-00000001.pt"
    torch.save({"step": 1, "x": Evil()}, path)
    from pvdm.errors import CheckpointError

    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_training_state(path)


def test_stop_request_turns_first_signal_into_a_flag() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_monitor_writes_means_and_rates(tmp_path) -> None:
    stats = tmp_path / "stats.jsonl"
    mon = Monitor(stats, start_step=0, max_steps=10, device=torch.device("cpu"), progress_bar=False)
    mon.add({"loss": 1.0}, samples=4)
    mon.add({"loss": 3.0}, samples=4)
    mon.report(2)
    row = json.loads(stats.read_text().splitlines()[0])
    assert row["step"] == 2 and row["loss"] == pytest.approx(2.0)
    assert row["steps_per_sec"] > 0 and row["samples_per_sec"] > 0 and row["peak_memory_gb"] > 0
    mon.close()


def test_seeds_are_stable_and_distinct() -> None:
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    assert len({step_seed(0, r, s) for r in range(4) for s in range(100)}) == 400
    assert mix_seed("a") == 1702698405120146464  # stable across runs and platforms


def test_train_config_validation_and_batch_split() -> None:
    with pytest.raises(ConfigError, match=r"train\.batch_size must be at least 1"):
        TrainConfig(batch_size=0).validate()
    assert local_batch_size(8, 2) == 4
    with pytest.raises(ConfigError, match="divisible"):
        local_batch_size(6, 4)
    assert format_duration(3723) == "1h02m03s" and format_duration(5) == "5s"


def test_atomic_writes_get_the_usual_file_mode(tmp_path) -> None:
    from pvdm.atomic import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_training_state_captures_and_restores_every_part(tmp_path) -> None:
    from pvdm.train.checkpoint import TrainingState

    def parts(seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        return model, opt, {"best_psnr": float(seed)}

    model, opt, guard = parts(0)
    saved = TrainingState(TrainConfig(), model=model, optimizer=opt, ema=None, guard=guard)
    state = saved.capture(7)
    assert set(state) == {"step", "model", "optimizer", "ema", "guard", "config"}
    assert state["ema"] is None and state["config"]["batch_size"] == TrainConfig().batch_size
    save_training_state(RunFolder(tmp_path), 7, state, keep=1)
    loaded = load_training_state(RunFolder(tmp_path).state_path(7))
    model2, opt2, guard2 = parts(1)
    restored = TrainingState(TrainConfig(), model=model2, optimizer=opt2, ema=None, guard=guard2)
    assert restored.restore(loaded) == 7
    assert torch.equal(model2.weight, model.weight) and guard2 == {"best_psnr": 0.0}
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )


def test_scheduled_lr_warms_up_holds_and_decays_to_zero() -> None:
    from pvdm.train.common import scheduled_lr

    # constant (the official recipe) when decay_frac is 0
    assert [scheduled_lr(1.0, 0, s, 100) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    # linear decay over the last half of 100 steps: full rate up to step 50, 0.5 at 75, 0.02 at 99
    rates = [scheduled_lr(1.0, 0, s, 100, 0.5) for s in (0, 50, 75, 99)]
    assert rates == pytest.approx([1.0, 1.0, 0.5, 0.02])
    # warm-up first (10 steps), then the same decay; a resumed longer run is back on full rate
    assert scheduled_lr(1.0, 10, 4, 100, 0.5) == pytest.approx(0.5)
    assert scheduled_lr(1.0, 0, 30, 30, 0.5) == 0.0
    assert scheduled_lr(1.0, 0, 30, 1000, 0.5) == 1.0
    with pytest.raises(ConfigError, match="lr_decay_frac"):
        TrainConfig(lr_decay_frac=1.5).validate()
