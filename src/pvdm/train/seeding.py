"""Randomness from (seed, rank, step): resume is exact without saving any RNG state.

Every training step reseeds the global generators from `step_seed(seed, rank, step)`; data
clips derive from (seed, batch index) in the sampler. An interrupted run that resumes at step k
therefore draws exactly what the uninterrupted run drew at step k.
"""

from __future__ import annotations

from pvdm.seeds import mix_seed


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one training step on one rank."""
    return mix_seed("step", seed, rank, step)
