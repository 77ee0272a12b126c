"""Content digests of videos, for keys that must change whenever the pixels may have.

Cached reference statistics (`pvdm.metrics.sources.dataset_identity`) are only as right as
their key. Paths and frame counts survive re-extracting frames at another size or quality (same
names, same counts), and sizes and modification times can survive too (fixed-size formats such
as BMP, copies that keep times, coarse file-system clocks), so a digest here is the SHA-256 of
every byte: of a video file, or of each frame file of a frame folder together with its name.

Hashing runs at disk speed (about 1 GB/s per core once the files are in the page cache) in a
few threads, since hashlib releases the GIL on large buffers: UCF-101's 13,320 videos (6.5 GB)
take seconds, little next to the reference features a stale key would reuse.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pvdm.data.frames import list_frames
from pvdm.errors import DataError
from pvdm.weights import file_sha256

_MAX_THREADS = 8


def video_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a video file's bytes, or of a frame folder's frame names and bytes."""
    path = Path(path)
    try:
        if not path.is_dir():
            return file_sha256(path)
        digest = hashlib.sha256()
        for name in list_frames(path):
            digest.update(f"{name}\0{file_sha256(path / name)}\n".encode())
        return digest.hexdigest()
    except OSError as e:
        raise DataError(
            f"cannot read {path} to fingerprint the data ({e.strerror or e}); check that the "
            "dataset is not being changed while it is read"
        ) from None


def video_digests(paths: Sequence[str | os.PathLike]) -> list[str]:
    """`video_digest` of each path, in order, hashed in a few threads."""
    if len(paths) < 2:
        return [video_digest(p) for p in paths]
    workers = min(_MAX_THREADS, os.cpu_count() or 1, len(paths))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(video_digest, paths))
