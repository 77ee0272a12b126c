"""JSON-lines files (stats.jsonl, metric-*.jsonl): appends are whole lines or nothing.

A full disk (or a kill) mid-append used to leave half a line, and the next record was glued to
it and lost. `append_line` writes the line in one O_APPEND write and, if the write fails
part-way, cuts the file back to its previous length; a file whose last line was torn by an
older writer gets a newline first, so the new record stands on its own line. `read_lines` skips
a line that does not parse with a warning instead of crashing on it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

from pvdm.errors import PvdmError

log = logging.getLogger(__name__)


def append_line(
    path: str | os.PathLike, record: Any, *, allow_nan: bool = True, fsync: bool = True
) -> Path:
    """Append `record` as one JSON line to `path` (whole or not at all); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, allow_nan=allow_nan) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # an older writer left a torn line: do not glue onto it
        try:
            written = os.write(fd, data)
            while written < len(data):  # short writes happen only for very long lines
                n = os.write(fd, data[written:])
                if n == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                written += n
            if fsync:
                os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # whole line or nothing
            raise PvdmError(
                f"cannot append to {path} ({e.strerror or e}); the record was not written. "
                "Free disk space (or fix the folder's permissions) and run the command again"
            ) from None
    finally:
        os.close(fd)
    return path


def read_lines(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, oldest first; lines that do not parse are skipped
    with a warning (e.g. a last line torn by a full disk)."""
    path = Path(path)
    rows = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning(
                "%s line %d is not a whole JSON record (torn write?); skipping it", path, number
            )
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            log.warning("%s line %d is not a JSON object; skipping it", path, number)
    return rows
