"""Frechet distance between Gaussians fitted to feature sets (FVD with I3D features).

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
from collections.abc import Iterator
from typing import Literal

import numpy as np
import scipy.linalg
import torch

from pvdm.metrics.stats import FeatureStats

log = logging.getLogger(__name__)

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
