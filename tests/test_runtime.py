"""The process-group helpers of `pvdm.runtime`: values in one process and across two gloo ranks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pvdm.runtime import all_reduce, all_reduce_sum, any_rank, from_rank0, gather_rows


def test_one_process_leaves_values_alone() -> None:
    t = torch.tensor([1.5, -2.0])
    assert all_reduce(t, "max") is t and torch.equal(t, torch.tensor([1.5, -2.0]))
    assert all_reduce_sum(t) is t
    assert any_rank(True) and not any_rank(False)
    assert from_rank0(True) and not from_rank0(False)
    rows = torch.arange(6).view(3, 2)
    assert gather_rows(rows) is rows


def _worker(rank: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        got = {}
        for op in ("sum", "max", "min"):
            t = torch.tensor([rank + 1.0, 10.0 * rank], dtype=torch.float64)
            same = all_reduce(t, op)
            got[op] = t.tolist()  # reduced in place
            got[f"{op}_same"] = same is t
        got["long_max"] = all_reduce(torch.tensor([3 * rank], dtype=torch.long), "max").item()
        got["any_1"] = any_rank(rank == 1)  # true on one rank only
        got["any_none"] = any_rank(False)
        got["rank0_true"] = from_rank0(rank == 0)  # rank 0 says True, rank 1 False
        got["rank0_false"] = from_rank0(rank == 1)
        got["gather"] = gather_rows(torch.full((rank + 1, 2), rank, dtype=torch.long)).tolist()
        with open(f"{out_file}.{rank}", "w") as f:
            json.dump(got, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes in a gloo group
def test_collectives_across_two_gloo_ranks(tmp_path) -> None:
    out = tmp_path / "rank"
    mp.spawn(_worker, args=(str(tmp_path / "pg"), str(out)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank.{rank}").read_text())
        assert got["sum"] == [3.0, 10.0] and got["sum_same"]
        assert got["max"] == [2.0, 10.0] and got["max_same"]
        assert got["min"] == [1.0, 0.0] and got["min_same"]
        assert got["long_max"] == 3
        assert got["any_1"] is True and got["any_none"] is False
        assert got["rank0_true"] is True and got["rank0_false"] is False
        assert got["gather"] == [[0, 0], [1, 1], [1, 1]]  # rank order, uneven counts
