"""Tiny training settings shared by the training tests (seconds per run on a CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"

TINY_AE = [
    "model.resolution=16",
    "model.frames=4",
    "model.patch_size=4",
    "model.width=32",
    "model.depth=1",
    "model.heads=2",
    "model.head_dim=16",
    "model.projection_depth=1",
    "model.projection_heads=2",
    "model.projection_head_dim=16",
    "model.projection_mlp_dim=32",
    "data.resolution=16",
    "data.frames=4",
    "data.synthetic_videos=16",
    "data.synthetic_frames=12",
    "train.batch_size=2",
    "train.log_every=1",
    "train.eval_every=4",
    "train.tensorboard=false",
    "loss.guard_clips=2",
]

TINY_DM = [
    "model.model_channels=32",
    "model.channel_mult=[1, 1]",
    "model.num_res_blocks=1",
    "model.attention_resolutions=[2]",
    "model.num_heads=2",
    "data.synthetic_videos=16",
    "data.synthetic_frames=12",
    "train.batch_size=2",
    "train.log_every=1",
    "train.tensorboard=false",
    "preview_samples=2",
    "preview_steps=2",
]


def sets(overrides: list[str]) -> list[str]:
    """--set flags for a list of overrides."""
    return [arg for o in overrides for arg in ("--set", o)]


def pvdm_env() -> dict[str, str]:
    """Environment for a `python -m pvdm` subprocess: this source tree, one thread, no cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_pvdm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m pvdm ARGS` and return the finished process (stdout/stderr captured)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pvdm", *args],
        env=pvdm_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pvdm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
