"""Test-session settings shared by every test file."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    """Under pytest-xdist each worker owns one core: N workers on N cores, none oversubscribed.

    PyTorch's OpenMP threads spin while they wait, so two 2-thread workers on two cores run far
    slower than two 1-thread ones. Subprocesses inherit the setting.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
