"""ClipSampler: deterministic, shuffled per epoch, sharded without overlap, restartable."""

from __future__ import annotations

import itertools

import pytest

from pvdm.data import ClipRequest, ClipSampler
from pvdm.errors import ConfigError


def _take(sampler: ClipSampler, count: int) -> list[ClipRequest]:
    return list(itertools.islice(iter(sampler), count))


def test_deterministic_and_seed_dependent() -> None:
    a = _take(ClipSampler(10, 4, seed=3), 40)
    b = _take(ClipSampler(10, 4, seed=3), 40)
    c = _take(ClipSampler(10, 4, seed=4), 40)
    assert a == b
    assert [r.index for r in a] != [r.index for r in c]
    assert len({r.seed for r in a}) == 40  # every clip gets its own seed, even repeated videos


def test_each_epoch_is_a_fresh_permutation() -> None:
    order = [r.index for r in _take(ClipSampler(7, 7, seed=0), 21)]
    epochs = [order[i : i + 7] for i in (0, 7, 14)]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3
    plain = [r.index for r in _take(ClipSampler(7, 7, seed=0, shuffle=False), 14)]
    assert plain == list(range(7)) * 2


def test_ranks_split_each_global_batch_without_overlap() -> None:
    world, global_batch = 4, 8
    single = ClipSampler(16, global_batch, seed=5)
    ranks = [ClipSampler(16, global_batch, seed=5, rank=r, world_size=world) for r in range(world)]
    for b in range(6):
        parts = [s.batch(b) for s in ranks]
        assert all(len(p) == 2 for p in parts)
        assert [req for part in parts for req in part] == single.batch(b)
    epoch = [req.index for b in range(2) for s in ranks for req in s.batch(b)]
    assert sorted(epoch) == list(range(16))  # 2 global batches = 1 epoch, each video once


@pytest.mark.parametrize("start", [0, 1, 7, 123])
def test_restart_at_any_batch_reproduces_the_stream(start) -> None:
    fresh = _take(ClipSampler(9, 6, seed=11, rank=1, world_size=2), (start + 3) * 3)
    resumed = _take(ClipSampler(9, 6, seed=11, rank=1, world_size=2, start_batch=start), 9)
    assert resumed == fresh[start * 3 :]


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        ClipSampler(10, 6, seed=0, world_size=4)
    with pytest.raises(ConfigError, match="rank"):
        ClipSampler(10, 8, seed=0, rank=4, world_size=4)
    with pytest.raises(ConfigError, match="at least one video"):
        ClipSampler(0, 8, seed=0)
