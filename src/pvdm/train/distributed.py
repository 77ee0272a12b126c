"""The per-rank batch of a training run; the process-group helpers live in `pvdm.runtime`."""

from __future__ import annotations

from pvdm.errors import ConfigError

__all__ = ["local_batch_size"]


def local_batch_size(global_batch: int, world_size: int) -> int:
    """The per-rank batch: the global batch divided by the world size, which must divide it."""
    if global_batch % world_size:
        raise ConfigError(
            f"train.batch_size={global_batch} is the global batch and must be divisible by the "
            f"number of processes ({world_size})"
        )
    return global_batch // world_size
