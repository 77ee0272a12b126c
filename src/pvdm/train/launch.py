"""Data-parallel training on one machine without typing torchrun: `--workers N`.

The small networks of a CPU try-out do not keep two cores busy from one process (their
kernels are too short to split well between threads), while two processes of one thread each
do. `launch_workers` runs the same `pvdm` command as N processes of one torchrun group on this
machine (`torch.distributed.run --standalone`, gloo on CPU), each with cores / N threads; the
training loops are the torchrun ones, so a run computes what one process computes with the same
global batch (tests/test_train_distributed.py) and resumes exactly, whatever the worker count.
Ctrl-C reaches every worker (one process group): they save and exit, and so does this one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from pvdm.errors import ConfigError

WORKERS_FLAG = "--workers"


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(value: str | int, device: str = "auto") -> int:
    """`--workers` as a count: `auto` is one process per core on a CPU-only run (at most 8), one
    otherwise (use torchrun for GPUs)."""
    if value == "auto":
        import torch

        on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        return min(cpu_cores(), 8) if on_cpu else 1
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--workers must be a number or auto, got {value!r}") from None
    if not 1 <= workers <= 64:
        raise ConfigError(f"--workers must lie in [1, 64], got {workers}")
    return workers


def under_torchrun() -> bool:
    """Whether this process is one worker of a torchrun group already."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_workers(argv: Sequence[str], workers: int) -> int:
    """Run `python -m pvdm <argv>` as `workers` processes of one group; their exit status (130
    or 143 after a stop, as one process gives)."""
    threads = max(1, cpu_cores() // workers)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(workers), "-m", "pvdm", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env)
    sent = 0

    def forward(signum: int, frame: object) -> None:
        nonlocal sent
        sent = signum
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if sent and code != 0:
        return 128 + sent  # stopped, saved and resumable, as a one-process run reports it
    return code


def without_workers_flag(argv: Sequence[str]) -> list[str]:
    """`argv` less `--workers N` / `--workers=N` (the workers must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == WORKERS_FLAG:
            skip = True
        elif not arg.startswith(WORKERS_FLAG + "="):
            out.append(arg)
    return out
