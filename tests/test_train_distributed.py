"""torchrun with 2 CPU processes (gloo) computes what one process computes with the same global
batch, within float tolerance."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch
from train_helpers import TINY_AE, pvdm_env, run_pvdm, sets

STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(outdir) -> list[str]:
    return [
        "train-autoencoder", "--preset", "debug", "--outdir", str(outdir),
        "--max-steps", str(STEPS), "--checkpoint-every", str(STEPS),
        # no warm-up: a few steps at its first tiny rates would hardly move the weights
        *sets([*TINY_AE, "train.batch_size=4", "train.warmup_steps=0"]),
    ]  # fmt: skip


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path) -> None:
    run_pvdm(*_args(tmp_path / "single"))
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "pvdm",
    ]  # fmt: skip
    proc = subprocess.run(
        [*torchrun, *_args(tmp_path / "ddp")],
        env=pvdm_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 process(es)" in proc.stderr
    single = torch.load(
        tmp_path / "single" / "checkpoints" / f"state-{STEPS:08d}.pt", weights_only=True
    )
    ddp = torch.load(tmp_path / "ddp" / "checkpoints" / f"state-{STEPS:08d}.pt", weights_only=True)
    for name, w in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    # and both did train: the weights moved away from the shared initialisation
    from pvdm.config import load_config
    from pvdm.models import TriplaneAutoencoder
    from pvdm.train.autoencoder import AutoencoderRunConfig

    cfg = load_config(AutoencoderRunConfig, tmp_path / "single" / "config.yaml")
    torch.manual_seed(cfg.train.seed)
    init = TriplaneAutoencoder(cfg.model).state_dict()
    moved = max(float((init[k] - w).abs().max()) for k, w in single["model"].items())
    assert moved > 1e-3


@pytest.mark.slow
def test_workers_flag_runs_the_same_training_as_one_process(tmp_path) -> None:
    """`--workers 2` is torchrun with 2 CPU processes, launched by pvdm itself."""
    run_pvdm(*_args(tmp_path / "single"))
    proc = subprocess.run(
        [sys.executable, "-m", "pvdm", *_args(tmp_path / "two"), "--workers", "2"],
        env=pvdm_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "2 process(es)" in proc.stderr
    single = torch.load(
        tmp_path / "single" / "checkpoints" / f"state-{STEPS:08d}.pt", weights_only=True
    )
    two = torch.load(tmp_path / "two" / "checkpoints" / f"state-{STEPS:08d}.pt", weights_only=True)
    for name, w in single["model"].items():
        torch.testing.assert_close(two["model"][name], w, rtol=1e-4, atol=1e-5, msg=name)


def test_workers_settings() -> None:
    from pvdm.errors import ConfigError
    from pvdm.train.launch import resolve_workers, without_workers_flag

    assert resolve_workers("3") == 3 and resolve_workers(1) == 1
    assert 1 <= resolve_workers("auto", "cpu") <= 8
    for bad in ("0", "x", "100"):
        with pytest.raises(ConfigError, match="--workers"):
            resolve_workers(bad)
    argv = ["train-diffusion", "--workers", "2", "--outdir", "r", "--workers=auto", "--seed", "1"]
    assert without_workers_flag(argv) == ["train-diffusion", "--outdir", "r", "--seed", "1"]
