"""The per-rank batch of a training run; the process-group helpers live in `pvdm.runtime`."""

from __future__ import annotations

from pvdm.errors import ConfigError
from pvdm.runtime import DistInfo, init_distributed, resolve_device, shutdown_distributed

__all__ = [
    "DistInfo",
    "init_distributed",
    "local_batch_size",
    "resolve_device",
    "shutdown_distributed",
]


def local_batch_size(global_batch: int, world_size: int) -> int:
    """The per-rank batch: the global batch divided by the world size, which must divide it."""
    if global_batch % world_size:
        raise ConfigError(
            f"train.batch_size={global_batch} is the global batch and must be divisible by the "
            f"number of processes ({world_size})"
        )
    return global_batch // world_size
