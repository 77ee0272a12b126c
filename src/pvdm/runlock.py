"""One process per run folder: an exclusive lock on RUN/.lock, held while a command writes there.

The lock is an `fcntl.flock` on an open file, so the kernel releases it whenever the process
ends, however it ends (a SIGKILL included): a lock left by a killed process never blocks the
next run. The holder's pid is written into the file only to name it in the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pvdm.errors import PvdmError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str = "--outdir") -> Iterator[Path]:
    """Hold the lock of `folder` (created if needed) for the duration of the block."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise PvdmError(f"cannot create {folder} ({e.strerror}); choose another {what}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise PvdmError(
                f"{folder} is in use by another pvdm process (pid {holder}); wait for it to "
                f"finish or stop it, or choose another {what}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
