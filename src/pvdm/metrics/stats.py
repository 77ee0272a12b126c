"""Streamed feature statistics (float64 sums, reduced across ranks) and the Frechet distance.

Batches of detector features are folded into a running count, sum and sum of outer products in
float64 (the edm2/StyleGAN-V approach), so no feature matrix is kept and any number of ranks can
add their partial sums with one all-reduce. For the Inception Score the rows themselves are
needed: `capture_rows=True` keeps them and `all_rows()` gathers them from every rank in the
order of the sample indices given to `update`, so the result does not depend on the GPU count.

The Frechet distance between Gaussians fitted to two feature sets (FVD with I3D features):
FD = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)), in float64.

The trace of the square root is computed as in TF-GAN and the official PVDM code: for PSD
S_a, S_b, (S_a S_b)^(1/2) is similar to (S_a^(1/2) S_b S_a^(1/2))^(1/2), a symmetric PSD
matrix, so the trace is the sum of square roots of its eigenvalues. Symmetric eigen-
decompositions are exact to rounding even when the covariances are singular (fewer samples
than feature dimensions, as with 256 videos of 400-d logits), where the general `sqrtm` of the
non-symmetric product can fail or return complex noise. `method="sqrtm"` (StyleGAN-V's choice,
scipy.linalg.sqrtm of S_a S_b) is kept for comparison with numbers computed that way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import numpy as np
import scipy.linalg
import torch

from pvdm.runtime import all_reduce, gather_rows, rank_and_world

log = logging.getLogger(__name__)


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


# --- the Frechet distance -----------------------------------------------------------------

Stats = FeatureStats | tuple[np.ndarray, np.ndarray] | np.ndarray | torch.Tensor


def mean_cov(x: Stats, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) in float64 from FeatureStats, a (mu, sigma) pair, or features [N, D]."""
    if isinstance(x, FeatureStats):
        return x.mean_cov(ddof)
    if isinstance(x, tuple):
        mu, sigma = (np.asarray(v.cpu() if torch.is_tensor(v) else v, np.float64) for v in x)
        return mu, sigma
    feats = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {feats.shape}")
    return FeatureStats.from_features(feats).mean_cov(ddof)


def _psd_eigvals(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w, v = torch.linalg.eigh(0.5 * (mat + mat.T))
    # Eigenvalues below the rounding level of the largest one are zero: the matrix is PSD, so
    # the tiny (possibly negative) values of its null space carry no information.
    tol = max(float(w.max()), 0.0) * mat.shape[0] * np.finfo(np.float64).eps
    return torch.where(w > tol, w, 0.0), v


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # At these sizes (D = 400) threads gain nothing, and on a busy machine OpenMP's spin-waiting
    # threads make a 50 ms decomposition take seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """Tr((S_a S_b)^(1/2)) for symmetric PSD S_a, S_b via two symmetric eigendecompositions."""
    a = torch.as_tensor(np.asarray(sigma_a, np.float64))
    b = torch.as_tensor(np.asarray(sigma_b, np.float64))
    with _one_thread():
        w, v = _psd_eigvals(a)
        sqrt_a = (v * w.sqrt()) @ v.T
        inner, _ = _psd_eigvals(sqrt_a @ b @ sqrt_a)
    return float(inner.sqrt().sum())


def _trace_sqrtm(sigma_a: np.ndarray, sigma_b: np.ndarray, eps: float = 1e-6) -> float:
    prod = sigma_a @ sigma_b
    root = scipy.linalg.sqrtm(prod)
    if not np.isfinite(root).all():
        # Singular product: shift both covariances by eps*I (the pytorch-fid fallback).
        log.warning("sqrtm of a singular covariance product; adding %g to the diagonals", eps)
        offset = eps * np.eye(sigma_a.shape[0])
        root = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(root):
        imag = np.abs(np.diagonal(root).imag).max()
        if imag > 1e-3 * max(np.abs(np.diagonal(root).real).max(), 1.0):
            log.warning("sqrtm returned a large imaginary part (%g); keeping the real part", imag)
        root = root.real
    return float(np.trace(root))


def frechet_distance(
    a: Stats, b: Stats, *, ddof: int = 1, method: Literal["eigh", "sqrtm"] = "eigh"
) -> float:
    """Frechet distance between two feature sets or their statistics.

    `a`, `b`: feature matrices [N, D] (NumPy or torch), `FeatureStats`, or (mu, sigma) pairs.
    `ddof`: covariance normaliser for raw features/FeatureStats (1 = unbiased, the official
    PVDM code; StyleGAN-V uses 0).
    """
    mu_a, sigma_a = mean_cov(a, ddof)
    mu_b, sigma_b = mean_cov(b, ddof)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape} vs {mu_b.shape}")
    if method == "eigh":
        tr_sqrt = trace_sqrt_product(sigma_a, sigma_b)
    elif method == "sqrtm":
        tr_sqrt = _trace_sqrtm(sigma_a, sigma_b)
    else:
        raise ValueError(f"unknown method {method!r} (use 'eigh' or 'sqrtm')")
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_sqrt)


def kernel_distance(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    *,
    num_subsets: int = 50,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID, Binkowski et al. 2018) between two feature sets [N, D], [M, D]:
    the unbiased estimate of the squared MMD with the cubic polynomial kernel
    k(x, y) = (x.y / D + 1)^3, and its spread.

    Unlike the Frechet distance it has no bias at small counts (its expectation does not
    depend on N and M), so it ranks sets of a handful of clips. Returns (the estimate on the
    full sets, the standard deviation of the estimates on `num_subsets` random half-size
    subsets); both sets need at least 2 rows (4 for a spread; else it is nan).
    """
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected feature matrices of one width, got {x.shape} and {y.shape}")
    if min(len(x), len(y)) < 2:
        raise ValueError("the kernel distance needs at least 2 rows in each set")

    def mmd2(xs: torch.Tensor, ys: torch.Tensor) -> float:
        d = xs.shape[1]
        kxx = (xs @ xs.T / d + 1) ** 3
        kyy = (ys @ ys.T / d + 1) ** 3
        kxy = (xs @ ys.T / d + 1) ** 3
        n, m = len(xs), len(ys)
        within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return float(within_x + within_y - 2 * kxy.mean())

    full = mmd2(x, y)
    half_x, half_y = len(x) // 2, len(y) // 2
    if min(half_x, half_y) < 2:
        return full, float("nan")
    g = torch.Generator().manual_seed(seed)
    estimates = [
        mmd2(
            x[torch.randperm(len(x), generator=g)[:half_x]],
            y[torch.randperm(len(y), generator=g)[:half_y]],
        )
        for _ in range(num_subsets)
    ]
    return full, float(np.std(estimates))
