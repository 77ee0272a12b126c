"""Exact resume: a run killed with SIGKILL several times and resumed ends with bit-identical
weights to an uninterrupted run; SIGTERM finishes the step, saves and exits with 143."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import TINY_AE, pvdm_env, run_pvdm, sets

STEPS = 16


def _command(outdir) -> list[str]:
    return [
        sys.executable, "-m", "pvdm", "train-autoencoder", "--preset", "debug",
        "--outdir", str(outdir), "--max-steps", str(STEPS), "--checkpoint-every", "2",
        *sets(TINY_AE),
    ]  # fmt: skip


def _final_state(outdir) -> dict:
    return torch.load(outdir / "checkpoints" / f"state-{STEPS:08d}.pt", weights_only=True)


def _assert_identical(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"])


@pytest.mark.slow
def test_sigkill_resume_is_bit_identical(tmp_path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(_command(reference), env=pvdm_env(), check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    rng = random.Random(1234)
    kills = 0
    resumed_from = set()
    for _ in range(3):
        before = {p.name for p in (interrupted / "checkpoints").glob("state-*.pt")}
        proc = subprocess.Popen(
            _command(interrupted), env=pvdm_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        # wait until this process has written a new checkpoint, then kill it at a random moment
        while time.monotonic() < deadline and proc.poll() is None:
            now = {p.name for p in (interrupted / "checkpoints").glob("state-*.pt")}
            if now - before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        resumed_from.update(line for line in err.decode().splitlines() if "resuming from" in line)
    assert kills >= 2, "the run finished before it could be killed"
    run_pvdm(*_command(interrupted)[3:])
    assert resumed_from, "no run resumed from a checkpoint"
    _assert_identical(_final_state(reference), _final_state(interrupted))
    assert not list((interrupted / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_sigterm_saves_exits_143_then_resumes(tmp_path) -> None:
    outdir = tmp_path / "run"
    proc = subprocess.Popen(
        _command(outdir), env=pvdm_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    stats = outdir / "stats.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        stats.is_file() and stats.read_text().count("\n") >= 3
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()  # 128 + SIGTERM: `&& pvdm sample` stops here
    assert "SIGTERM received" in err.decode()
    states = sorted((outdir / "checkpoints").glob("state-*.pt"))
    stopped_at = int(states[-1].stem.split("-")[1])
    assert 0 < stopped_at < STEPS
    proc = run_pvdm(*_command(outdir)[3:])
    assert "resuming from" in proc.stderr and _final_state(outdir)["step"] == STEPS
