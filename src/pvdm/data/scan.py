"""Scanning video metadata once, with a cache keyed by path, size and modification time.

The official loader lists files and decodes each video whole per sample; it never needs
metadata. Seeking needs each video's frame count and keyframes, which scanning gets by
demuxing packets (no decoding but one frame). Results, failures included, are cached in
`$PVDM_CACHE/index` (else `~/.cache/pvdm/index`), one JSON file per dataset root; a file whose
size or modification time changed is scanned again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pvdm.atomic import atomic_write_text
from pvdm.data.decode import Probe, ReadError, list_frames, probe

log = logging.getLogger(__name__)

# Bump when the Probe fields or their meaning change: older cache entries are then ignored.
CACHE_FORMAT = 1
# Scanning more files than this (not yet cached) uses worker processes.
_PARALLEL_FROM = 256


@dataclass(frozen=True)
class VideoInfo:
    """One usable video: its path, frame count, frame size and rate, and class (-1 if none)."""

    path: str
    num_frames: int
    height: int
    width: int
    fps: float
    label: int = -1


def index_dir() -> Path:
    """Folder of the scan cache: `$PVDM_CACHE/index`, else `~/.cache/pvdm/index`."""
    base = os.environ.get("PVDM_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "pvdm"
    return root / "index"


def scan(root: str | Path, paths: Sequence[str | Path], *, cache: bool = True) -> list[Probe | str]:
    """Probe each path (file or frame folder): a `Probe`, or the reason it is unusable."""
    root = Path(root)
    keys = [_stat_key(Path(p)) for p in paths]
    cache_file = index_dir() / f"{_root_id(root)}.json"
    entries = _load(cache_file) if cache else {}
    results: list[Probe | str | None] = []
    todo: list[int] = []
    for i, (path, key) in enumerate(zip(paths, keys)):
        entry = entries.get(str(path))
        if isinstance(key, str):
            results.append(key)  # cannot even stat it; not worth caching
        elif entry is not None and entry.get("key") == list(key):
            results.append(
                Probe.from_json(entry["probe"]) if "probe" in entry else str(entry["error"])
            )
        else:
            results.append(None)
            todo.append(i)
    if todo:
        start = time.perf_counter()
        if len(todo) >= 16:
            log.info("scanning %d videos under %s (cached for later runs)", len(todo), root)
        scanned = _probe_many([str(paths[i]) for i in todo])
        for i, result in zip(todo, scanned):
            results[i] = result
            entry = {"key": list(keys[i])}
            if isinstance(result, Probe):
                entry["probe"] = result.to_json()
            else:
                entry["error"] = result
            entries[str(paths[i])] = entry
        if len(todo) >= 16:
            log.info("scanned %d videos in %.1f s", len(todo), time.perf_counter() - start)
        if cache:
            _save(cache_file, root, entries)
    return results  # type: ignore[return-value]


def probe_or_reason(path: str) -> Probe | str:
    """`probe(path)`, or the reason it failed as a string."""
    try:
        return probe(path)
    except ReadError as e:
        return str(e)
    except Exception as e:  # a decoder bug must not stop a scan of thousands of files
        return f"unexpected error while reading ({type(e).__name__}: {e})"


def _probe_many(paths: list[str]) -> list[Probe | str]:
    workers = min(8, os.cpu_count() or 1)
    if len(paths) < _PARALLEL_FROM or workers < 2:
        return [probe_or_reason(p) for p in paths]
    try:
        # spawn, not fork: the caller may hold threads (PyAV, torch) that fork would copy.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            return list(pool.map(probe_or_reason, paths, chunksize=32))
    except (OSError, RuntimeError) as e:
        log.warning("parallel scan failed (%s); scanning in this process", e)
        return [probe_or_reason(p) for p in paths]


def _stat_key(path: Path) -> tuple[int, int] | str:
    """(size, mtime_ns) of a file; (frame count, mtime_ns) of a frame folder; else a reason."""
    try:
        st = path.stat()
        if path.is_dir():
            return (len(list_frames(path)), st.st_mtime_ns)
        return (st.st_size, st.st_mtime_ns)
    except OSError as e:
        return f"cannot read the file ({e.strerror or e})"


def _root_id(root: Path) -> str:
    resolved = str(root.expanduser().resolve())
    return hashlib.sha256(resolved.encode()).hexdigest()[:20]


def _load(cache_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable scan cache %s (%s)", cache_file, e)
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save(cache_file: Path, root: Path, entries: dict[str, Any]) -> None:
    data = {"format": CACHE_FORMAT, "root": str(root), "entries": entries}
    try:
        atomic_write_text(cache_file, json.dumps(data, separators=(",", ":")))
    except OSError as e:
        log.warning(
            "could not write the scan cache %s (%s); scanning again next time", cache_file, e
        )
