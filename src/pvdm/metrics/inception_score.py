"""Inception Score (Salimans et al. 2016) of class probabilities, as the video IS uses it.

IS = exp(E_x[KL(p(y|x) || p(y))]), computed per split with p(y) the split's mean prediction,
reported as the mean and (population) standard deviation over the splits. StyleGAN-V's
`isv2048_ucf` shuffles the 2,048 C3D predictions with NumPy seed 42 before splitting them in 10;
`shuffle_seed=None` keeps the given order (TGANv2's code). 0 * log 0 is taken as 0, so exact
one-hot predictions are fine (TGANv2 adds 1e-20 instead; the difference is below 1e-15).
"""

from __future__ import annotations

import numpy as np
import scipy.special
import torch


def inception_score(
    probs: torch.Tensor | np.ndarray, num_splits: int = 10, shuffle_seed: int | None = 42
) -> tuple[float, float]:
    """(mean, std) of the Inception Score over `num_splits` splits of probabilities [N, K]."""
    p = probs.detach().cpu().double().numpy() if torch.is_tensor(probs) else np.array(probs)
    p = p.astype(np.float64)
    if p.ndim != 2 or p.shape[0] < num_splits:
        raise ValueError(
            f"need a [N, K] probability matrix with N >= {num_splits}, got shape {p.shape}"
        )
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(p)
    n = p.shape[0]
    scores = []
    for i in range(num_splits):
        part = p[i * n // num_splits : (i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
