"""The `pvdm` command. Each subcommand lives in a module of this package with a `register()`.

Modules here import only the standard library at import time, so `pvdm --help` is instant;
the heavy imports (torch, PyAV) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except PvdmError as e:
        print(f"pvdm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pvdm: interrupted", file=sys.stderr)
        return 130
