"""Frechet distance: known answers, input forms, singular covariances, agreement with sqrtm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from pvdm.metrics import FeatureStats, frechet_distance, trace_sqrt_product


def test_one_dimensional_gaussians_known_answer() -> None:
    # FD(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2.
    a = (np.array([1.0]), np.array([[4.0]]))
    b = (np.array([-2.0]), np.array([[9.0]]))
    assert frechet_distance(a, b) == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_diagonal_covariances_known_answer() -> None:
    va, vb = np.array([1.0, 4.0, 0.0, 2.0]), np.array([9.0, 1.0, 0.0, 2.0])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    got = frechet_distance((mu_a, np.diag(va)), (mu_b, np.diag(vb)))
    assert got == pytest.approx(expected, rel=1e-12)


def test_matches_scipy_sqrtm_reference_on_full_rank_data() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 20)) @ rng.standard_normal((20, 20))
    b = rng.standard_normal((400, 20)) * 2.0 + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((mu_a - mu_b) ** 2).sum() + np.trace(
        s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real
    )
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(reference, rel=1e-9)


def test_input_forms_agree() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 8)), rng.standard_normal((60, 8)) + 1.0
    reference = frechet_distance(a, b)
    assert frechet_distance(torch.from_numpy(a).float(), b) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(FeatureStats.from_features(a), b) == pytest.approx(reference)
    mu, sigma = FeatureStats.from_features(b).mean_cov()
    assert frechet_distance(a, (mu, sigma)) == pytest.approx(reference)
    assert frechet_distance(a, (torch.from_numpy(mu), torch.from_numpy(sigma))) == pytest.approx(
        reference
    )
    assert frechet_distance(b, a) == pytest.approx(reference, rel=1e-9)  # symmetric


def test_ddof_selects_the_covariance_estimator() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((10, 3)), rng.standard_normal((10, 3))
    biased = frechet_distance(
        (a.mean(0), np.cov(a, rowvar=False, bias=True)),
        (b.mean(0), np.cov(b, rowvar=False, bias=True)),
    )
    assert frechet_distance(a, b, ddof=0) == pytest.approx(biased, rel=1e-10)
    assert frechet_distance(a, b, ddof=0) != pytest.approx(frechet_distance(a, b), rel=1e-3)


def test_singular_covariances_fewer_samples_than_dimensions() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((30, 64))
    b = rng.standard_normal((40, 64)) * 1.5
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    assert abs(frechet_distance(a, a)) <= 1e-10 * np.trace(np.cov(a, rowvar=False))
    # sqrtm of the singular product is approximate; the eigen route is exact to rounding.
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(fd, rel=1e-4)


def test_trace_sqrt_product_of_rank_deficient_commuting_matrices() -> None:
    # S_a = diag(4, 0, 1), S_b = diag(1, 5, 9): Tr sqrt(S_a S_b) = 2 + 0 + 3.
    assert trace_sqrt_product(np.diag([4.0, 0.0, 1.0]), np.diag([1.0, 5.0, 9.0])) == (
        pytest.approx(5.0, rel=1e-12)
    )


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        frechet_distance(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.eye(3), np.eye(3), method="svd")
