"""Streamed feature statistics: batch-by-batch equals one shot, merges, and the all-reduce over ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pvdm.metrics import FeatureStats, accumulate_features, frechet_distance
from pvdm.runtime import gather_rows


def _features(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A large common offset: the raw-moment formula must still be accurate in float64.
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 30.0


def test_streamed_statistics_equal_one_shot() -> None:
    feats = _features(103)
    stats = FeatureStats()
    for chunk in np.array_split(feats, 7):
        stats.update(torch.from_numpy(chunk).float())
    f32 = feats.astype(np.float32).astype(np.float64)  # what the float32 batches carried
    mu, sigma = stats.mean_cov()
    assert stats.count == 103
    np.testing.assert_allclose(mu, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-10)
    _, sigma0 = stats.mean_cov(ddof=0)
    np.testing.assert_allclose(sigma0, np.cov(f32, rowvar=False, bias=True), rtol=1e-9, atol=1e-10)


def test_merge_and_mean_cov_round_trip() -> None:
    a, b = _features(40, seed=1), _features(25, seed=2)
    merged = FeatureStats.from_features(a).merge(FeatureStats.from_features(b))
    whole = FeatureStats.from_features(np.concatenate([a, b]))
    for got, want in zip(merged.mean_cov(), whole.mean_cov()):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    mu, sigma = whole.mean_cov()
    rebuilt = FeatureStats.from_mean_cov(mu, sigma, whole.count)
    for got, want in zip(rebuilt.mean_cov(ddof=0), whole.mean_cov(ddof=0)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_captured_rows_follow_their_indices() -> None:
    stats = FeatureStats(capture_rows=True)
    rows = torch.arange(12.0).view(6, 2)
    stats.update(rows[3:], index=torch.tensor([3, 4, 5]))
    stats.update(rows[:3], index=torch.tensor([0, 1, 2]))
    assert torch.equal(stats.all_rows(), rows)


def test_accumulate_features_over_batches() -> None:
    videos = torch.arange(24.0).view(6, 4)
    batches = [(videos[3:], torch.tensor([3, 4, 5])), (videos[:3], torch.tensor([0, 1, 2]))]
    stats = accumulate_features(batches, lambda v: v * 2, capture_rows=True)
    assert stats.count == 6
    assert torch.equal(stats.all_rows(), videos * 2)
    np.testing.assert_allclose(stats.mean_cov()[0], (videos * 2).mean(0).numpy())
    with pytest.raises(RuntimeError, match="after all_reduce"):
        stats.update(videos)


def test_misuse_is_reported() -> None:
    stats = FeatureStats()
    with pytest.raises(ValueError, match="more than 1"):
        stats.mean_cov()
    stats.update(np.ones((3, 2)))
    with pytest.raises(ValueError, match="expected 2 features"):
        stats.update(np.ones((3, 4)))
    with pytest.raises(RuntimeError, match="capture_rows"):
        stats.all_rows()
    stats.all_reduce()
    with pytest.raises(RuntimeError, match="after all_reduce"):
        stats.update(np.ones((1, 2)))


WORLD = 2
ROWS_PER_RANK = (7, 4)  # unequal, as when the sample count does not divide by the ranks


def _rank_rows(rank: int) -> tuple[np.ndarray, np.ndarray]:
    feats = _features(sum(ROWS_PER_RANK), seed=5)
    index = np.arange(sum(ROWS_PER_RANK))
    # Sample i goes to rank i % 2 until rank 1 has its 4, the rest to rank 0.
    owner = np.where((index % 2 == 1) & (index < 2 * ROWS_PER_RANK[1]), 1, 0)
    return feats[owner == rank], index[owner == rank]


def _worker(rank: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        feats, index = _rank_rows(rank)
        stats = FeatureStats(capture_rows=True)
        for part, idx in zip(np.array_split(feats, 2), np.array_split(index, 2)):
            stats.update(torch.from_numpy(part), index=torch.from_numpy(idx))
        stats.all_reduce()
        mu, sigma = stats.mean_cov()
        rows = stats.all_rows().numpy()
        gathered = gather_rows(torch.full((rank + 1, 2), float(rank))).numpy()
        if rank == 0:
            np.savez(out_file, mu=mu, sigma=sigma, count=stats.count, rows=rows, g=gathered)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes in a gloo group
def test_all_reduce_and_gather_across_two_gloo_ranks(tmp_path) -> None:
    out = tmp_path / "rank0.npz"
    mp.spawn(_worker, args=(str(tmp_path / "pg"), str(out)), nprocs=WORLD, join=True)
    got = np.load(out)
    feats = _features(sum(ROWS_PER_RANK), seed=5)
    assert int(got["count"]) == feats.shape[0]
    np.testing.assert_allclose(got["mu"], feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["sigma"], np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(got["rows"], feats)  # back in sample order
    np.testing.assert_array_equal(got["g"], [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert frechet_distance((got["mu"], got["sigma"]), feats) == pytest.approx(0.0, abs=1e-9)


def test_kernel_distance_is_unbiased_at_small_counts_where_frechet_is_not() -> None:
    from pvdm.metrics.stats import frechet_distance, kernel_distance

    g = torch.Generator().manual_seed(0)
    pool = torch.randn(4000, 16, generator=g, dtype=torch.float64)

    def draws(n: int, shift: float) -> tuple[float, float]:
        """Mean KID and FD of 30 pairs of n-row draws, the second shifted by `shift`."""
        kids, fds = [], []
        for _ in range(30):
            idx = torch.randperm(4000, generator=g)[: 2 * n]
            a, b = pool[idx[:n]], pool[idx[n:]] + shift
            kids.append(kernel_distance(a, b, num_subsets=3)[0])
            fds.append(frechet_distance(a, b))
        return float(np.mean(kids)), float(np.mean(fds))

    kid8, fd8 = draws(8, 0.0)
    kid8_shifted, fd8_shifted = draws(8, 0.5)
    kid64, fd64 = draws(64, 0.0)
    # one distribution: KID is zero on average at any count (measured spread of the mean ~0.05)
    assert abs(kid8) < 0.15 and abs(kid64) < 0.03
    # and it tells a shifted distribution apart at 8 rows; FD of the same draws cannot
    assert kid8_shifted > 5 * 0.15
    assert fd8_shifted < 1.5 * fd8 and fd8 > 4 * fd64  # FD's bias shrinks with the count
    value, spread = kernel_distance(pool[8:16], pool[:8] + 1.0)
    assert value > 0.5 and spread > 0
    with pytest.raises(ValueError, match="at least 2 rows"):
        kernel_distance(pool[:1], pool[:4])
