"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename.

A crash (or a full disk) mid-write leaves the previous file intact and never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes 0600 files, and writers that replace the file (safetensors) keep that;
        # give the result the usual mode once it is written
        os.chmod(tmp, usual_mode())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def usual_mode(*, folder: bool = False) -> int:
    """The mode a plain `open` (or `mkdir`) gives a new file (folder) under the process umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it.

    `os.umask` can only set it, and setting it to 0 for a moment to read it let a file that
    another thread (the app's) created meanwhile come out world-writable. Linux reports it in
    /proc/self/status; elsewhere the value read once at import is used.
    """
    mask = _proc_umask()
    return _UMASK_AT_IMPORT if mask is None else mask


def _proc_umask() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    mask = _proc_umask()
    if mask is None:
        # Set and put back, once: for that moment the mask is 0o077, so a file another thread
        # creates meanwhile comes out private rather than world-writable.
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some file systems cannot sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
