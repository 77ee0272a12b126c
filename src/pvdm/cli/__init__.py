"""The `pvdm` command. Each subcommand lives in a module of this package with a `register()`.

Modules here import only the standard library at import time, so `pvdm --help` is instant;
the heavy imports (torch, PyAV) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from pvdm import __version__
from pvdm.errors import PvdmError

# Subcommand modules, in the order `pvdm --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "data",
    "train",
    "generate",
    "evaluate",
    "convert",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="pvdm",
        description="PVDM video diffusion: data, training, sampling and evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"pvdm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"pvdm.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pvdm` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else None  # what to run again (--workers)
    # the other ranks of a torchrun group (or of --workers) log warnings only: one copy of each line
    rank = int(os.environ.get("RANK", "0") or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except PvdmError as e:
        print(f"pvdm: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pvdm: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise
        print(f"pvdm: error: {message}", file=sys.stderr)
        return 1
    except Exception as e:  # torch.save and safetensors report a full disk in their own types
        if not any(s in str(e) for s in _DISK_FULL_TEXTS):
            raise
        print(f"pvdm: error: the disk is full ({str(e).splitlines()[0]}); {_FREE}", file=sys.stderr)
        return 1


_FREE = "free disk space and run the same command again (training resumes from its last state)"
_DISK_FULL_TEXTS = (
    "No space left on device",
    "file write failed",
    "Disk quota exceeded",
    "StorageFull",
)


def one_line(message: str) -> str:
    """The user's message of an error, also when a DataLoader worker wrapped it in its traceback
    ("Caught DataError in DataLoader worker process 0. Original Traceback ... DataError: text")."""
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        name, sep, text = last.partition(": ")
        if sep and " " not in name:
            return text
    return message


def os_error_message(e: OSError) -> str | None:
    """One sentence for a file-system error a user can cause, or None for anything else."""
    import errno

    where = f" ({e.filename})" if e.filename else ""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason}{where}; {_FREE}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason}{where}; choose a path you can write to or fix its permissions"
    if e.errno == errno.ELOOP:
        return f"{reason}{where}: a symbolic link points to itself; remove or fix it"
    if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOENT) and e.filename:
        return f"{reason}{where}; check the path and run again"
    return None
