"""Seeds derived from named parts, so randomness depends on (seed, step, index, ...) only.

Training reseeds the global generators at every step from `step_seed(seed, rank, step)`, and
data clips derive from (seed, batch index) in the sampler: a run that resumes at step k draws
exactly what the uninterrupted run drew at step k, without saving any RNG state. Sampling seeds
each video's noise from (seed, clip).
"""

from __future__ import annotations

import hashlib


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (stable across runs, platforms and Python)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one training step on one rank."""
    return mix_seed("step", seed, rank, step)
