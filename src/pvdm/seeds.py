"""Seeds derived from named parts, so randomness depends on (seed, step, index, ...) only."""

from __future__ import annotations

import hashlib


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (stable across runs, platforms and Python)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1
