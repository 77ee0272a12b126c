"""JSON-lines files (stats.jsonl, metric-*.jsonl): appends are whole lines or nothing.

A full disk (or a kill) mid-append used to leave half a line, and the next record was glued to
it and lost. `append_line` writes the line in one O_APPEND write and, if the write fails
part-way, cuts the file back to its previous length; a file whose last line was torn by an
older writer gets a newline first, so the new record stands on its own line. `read_lines` skips
a line that does not parse with a warning instead of crashing on it.

`parse_json` is `json.loads` for files a user can hand us (pipeline.json, safetensors headers,
run records): nesting deeper than any file pvdm writes is a `json.JSONDecodeError`, like any
other malformed JSON, instead of a RecursionError from the parser or from the code that walks
the result.
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

# pvdm's own JSON files nest a few levels; a hundred leaves room for anyone's metadata while
# staying far below Python's recursion limit (which `==`, `repr` and copies of the value need).
MAX_JSON_DEPTH = 100


def parse_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads(text)`; nesting deeper than `max_depth` raises `json.JSONDecodeError`."""
    try:
        value = json.loads(text)
        too_deep = _deeper_than(value, max_depth)
    except RecursionError:  # the parser itself gave up (thousands of levels)
        too_deep = True
    if too_deep:
        doc = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
        raise json.JSONDecodeError(f"nested deeper than {max_depth} levels", doc, 0)
    return value


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether lists and objects nest deeper than `max_depth` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


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
            row = parse_json(line)
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
