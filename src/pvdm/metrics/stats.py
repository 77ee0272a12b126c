"""Streamed feature statistics for FVD and IS: float64 sums, reduced across ranks.

Batches of detector features are folded into a running count, sum and sum of outer products in
float64 (the edm2/StyleGAN-V approach), so no feature matrix is kept and any number of ranks can
add their partial sums with one all-reduce. For the Inception Score the rows themselves are
needed: `capture_rows=True` keeps them and `all_rows()` gathers them from every rank in the
order of the sample indices given to `update`, so the result does not depend on the GPU count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from pvdm.runtime import all_reduce, gather_rows, rank_and_world


class FeatureStats:
    """Running mean and covariance of feature rows [N, D], kept as float64 sums.

    Call `update` per batch on every rank, then `all_reduce()` once on every rank (a no-op
    without torch.distributed) before reading `mean_cov()`.
    """

    def __init__(self, *, capture_rows: bool = False) -> None:
        self.count = 0
        self.num_features: int | None = None
        self.capture_rows = capture_rows
        self._sum: torch.Tensor | None = None  # [D] float64
        self._outer: torch.Tensor | None = None  # [D, D] float64
        self._rows: list[torch.Tensor] = []
        self._index: list[torch.Tensor] = []
        self._reduced = False

    def update(self, feats: torch.Tensor | np.ndarray, index: torch.Tensor | None = None) -> None:
        """Add a batch of feature rows [N, D]; `index` [N] orders gathered rows (optional)."""
        x = torch.as_tensor(feats).detach()
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {tuple(x.shape)}")
        if self._reduced:
            raise RuntimeError("FeatureStats.update after all_reduce: start a new FeatureStats")
        if self.num_features is None:
            self.num_features = x.shape[1]
            self._sum = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self._outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        elif x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} features per row, got {x.shape[1]}")
        x64 = x.to(self._sum.device, torch.float64)
        self._sum += x64.sum(dim=0)
        self._outer += x64.T @ x64
        self.count += x.shape[0]
        if self.capture_rows:
            self._rows.append(x.cpu())
            if index is not None:
                self._index.append(torch.as_tensor(index).reshape(-1).cpu().long())

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add another accumulator's sums into this one (same feature size); returns self."""
        if other.num_features is None:
            return self
        if self.num_features is None:
            self.num_features = other.num_features
            self._sum = other._sum.clone()
            self._outer = other._outer.clone()
        else:
            if other.num_features != self.num_features:
                raise ValueError("cannot merge statistics of different feature sizes")
            self._sum += other._sum.to(self._sum.device)
            self._outer += other._outer.to(self._outer.device)
        self.count += other.count
        self._rows += other._rows
        self._index += other._index
        return self

    def all_reduce(self) -> FeatureStats:
        """Sum the statistics of every rank (collective: all ranks must call it); returns self."""
        if self._reduced:
            raise RuntimeError("FeatureStats.all_reduce called twice")
        self._reduced = True
        if rank_and_world()[1] == 1:
            return self
        # A rank that saw no rows does not know the feature size yet: agree on it first.
        d = int(all_reduce(torch.tensor([self.num_features or 0], dtype=torch.long), "max").item())
        if self.num_features is None:
            self.num_features = d
            self._sum = torch.zeros(d, dtype=torch.float64)
            self._outer = torch.zeros(d, d, dtype=torch.float64)
        flat = torch.cat(
            [
                torch.tensor([float(self.count)], dtype=torch.float64),
                self._sum.cpu(),
                self._outer.cpu().reshape(-1),
            ]
        )
        all_reduce(flat, "sum")
        self.count = round(flat[0].item())
        self._sum = flat[1 : 1 + d].to(self._sum.device)
        self._outer = flat[1 + d :].reshape(d, d).to(self._outer.device)
        return self

    def mean_cov(self, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Mean [D] and covariance [D, D] as float64 NumPy arrays (ddof=1: unbiased)."""
        if self.num_features is None or self.count <= ddof:
            raise ValueError(
                f"need more than {ddof} feature rows for a covariance, have {self.count}"
            )
        s = self._sum.cpu().numpy()
        outer = self._outer.cpu().numpy()
        mean = s / self.count
        cov = (outer - self.count * np.outer(mean, mean)) / (self.count - ddof)
        return mean, 0.5 * (cov + cov.T)

    def all_rows(self) -> torch.Tensor:
        """Every captured row [N_total, D] on the CPU, gathered from all ranks.

        Rows come in the order of their `index` when every batch had one, else rank by rank.
        Collective under torch.distributed: all ranks must call it.
        """
        if not self.capture_rows:
            raise RuntimeError("rows were not captured: use FeatureStats(capture_rows=True)")
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, self.num_features or 0)
        index = None
        if len(self._index) == len(self._rows):  # every batch came with indices
            index = torch.cat(self._index) if self._index else torch.zeros(0, dtype=torch.long)
        if rank_and_world()[1] > 1:
            # Sort by index only if every rank has one (a rank without rows does not object).
            ok = all_reduce(torch.tensor([int(index is not None)]), "min")
            index = index if ok.item() else None
            rows = gather_rows(rows)
            if index is not None:
                index = gather_rows(index)
        if index is not None:
            rows = rows[torch.argsort(index, stable=True)]
        return rows

    @classmethod
    def from_features(cls, feats: torch.Tensor | np.ndarray) -> FeatureStats:
        """Statistics of one feature matrix [N, D] (local: no all-reduce)."""
        stats = cls()
        stats.update(feats)
        return stats

    @classmethod
    def from_mean_cov(
        cls, mean: np.ndarray, cov: np.ndarray, count: int, ddof: int = 1
    ) -> FeatureStats:
        """Rebuild the sums from a saved mean, covariance and count (inverse of `mean_cov`)."""
        mean = np.asarray(mean, dtype=np.float64)
        cov = np.asarray(cov, dtype=np.float64)
        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"mean {mean.shape} and covariance {cov.shape} do not match")
        stats = cls()
        stats.num_features = mean.shape[0]
        stats.count = int(count)
        stats._sum = torch.from_numpy(mean * count)
        stats._outer = torch.from_numpy(cov * (count - ddof) + count * np.outer(mean, mean))
        stats._reduced = True
        return stats


def accumulate_features(
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    extract: Callable[[torch.Tensor], torch.Tensor],
    *,
    capture_rows: bool = False,
) -> FeatureStats:
    """Features of every batch (`videos` or `(videos, sample_index)`), reduced over ranks.

    Every rank iterates over its own share of the samples; the returned statistics cover all
    of them (collective: all ranks must call it).
    """
    stats = FeatureStats(capture_rows=capture_rows)
    for batch in batches:
        videos, index = batch if isinstance(batch, tuple) else (batch, None)
        stats.update(extract(videos), index=index)
    return stats.all_reduce()
