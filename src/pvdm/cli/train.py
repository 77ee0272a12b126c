"""`pvdm train-autoencoder`, `pvdm cache-latents`, `pvdm train-diffusion`, `pvdm distill`.

Multi-GPU / multi-node: launch the same command with torchrun, e.g.
`torchrun --nproc_per_node 8 -m pvdm train-diffusion ...`; on one CPU machine `--workers N`
does that itself (`pvdm.train.launch`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# the names of pvdm.presets' run settings (the CLI imports no torch to list them; a test checks)
AUTOENCODER_RUN_NAMES = ["debug", "ucf101-256", "ucf101-256-gan", "sky-256", "sky-256-gan"]
DIFFUSION_RUN_NAMES = ["debug", "ucf101-256", "sky-256", "ucf101-256-classcond"]
DISTILL_RUN_NAMES = ["debug"]


def register(sub: argparse._SubParsersAction) -> None:
    from pvdm.cli.common import add_run_args

    p = sub.add_parser(
        "train-autoencoder",
        help="train the triplane autoencoder (phase 1, or phase 2 with the GAN presets)",
        description="Train or resume the autoencoder. Re-run the same command to resume.",
    )
    add_run_args(p, AUTOENCODER_RUN_NAMES)
    p.add_argument(
        "--init",
        help="start from these weights (a phase-1 run/snapshot, or a converted official checkpoint)",
    )
    p.set_defaults(func=_train_autoencoder)

    p = sub.add_parser(
        "train-diffusion",
        help="train the triplane diffusion model on autoencoder latents",
        description="Train or resume the latent diffusion model. Re-run the same command to resume.",
    )
    add_run_args(p, DIFFUSION_RUN_NAMES)
    p.add_argument("--autoencoder", help="the autoencoder: run folder, snapshot or checkpoint")
    p.set_defaults(func=_train_diffusion)

    p = sub.add_parser(
        "distill",
        help="distill a few-step student from a trained diffusion model",
        description="Distill (or resume distilling) a student that samples in --steps network "
        "evaluations; the student folder works wherever a diffusion model does. Re-run the "
        "same command to resume.",
    )
    add_run_args(p, DISTILL_RUN_NAMES)  # --data: the teacher's latent cache (default: its run's)
    p.add_argument("--teacher", help="the trained diffusion model: run folder or pipeline")
    p.add_argument("--steps", type=int, help="network evaluations per clip of the student")
    p.set_defaults(func=_distill)

    p = sub.add_parser(
        "cache-latents",
        help="encode a dataset once into a latent cache for train-diffusion",
    )
    p.add_argument("--autoencoder", required=True, help="run folder, snapshot or checkpoint")
    p.add_argument("--data", required=True, help="dataset folder or 'synthetic'")
    p.add_argument("--out", type=Path, required=True, help="cache folder to write")
    p.add_argument("--layout", default="auto", help="auto|ucf101|sky|folder|synthetic")
    p.add_argument("--split", default="train")
    p.add_argument("--windows", type=int, default=4, help="random windows per video")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="data.* overrides"
    )
    p.set_defaults(func=_cache_latents)


def _finish(cfg, args) -> bool:
    if args.print_config:
        from pvdm.config import dump_config

        print(dump_config(cfg), end="")
        return True
    return False


def _workers(args: argparse.Namespace, cfg) -> int | None:
    """With --workers N > 1 (and not a worker already): the exit status of this same command
    run as N data-parallel processes; None to train in this process."""
    import sys

    from pvdm.cli.common import training_lock
    from pvdm.train.launch import launch_workers, resolve_workers, under_torchrun
    from pvdm.train.launch import without_workers_flag as strip

    workers = resolve_workers(args.workers, cfg.train.device)
    if workers == 1 or under_torchrun():
        return None
    with training_lock(args.outdir):  # a busy folder is one line here, not a failed worker
        pass  # (rank 0 of the workers takes the lock for the run)
    return launch_workers(strip(sys.argv[1:] if args.argv is None else args.argv), workers)


def _train_autoencoder(args: argparse.Namespace) -> int:
    from pvdm.cli.common import resolve_run_config, training_lock
    from pvdm.presets import AUTOENCODER_RUNS
    from pvdm.train.autoencoder import AutoencoderRunConfig, train_autoencoder
    from pvdm.train.interrupt import stop_exit_code

    cfg = resolve_run_config(AutoencoderRunConfig, AUTOENCODER_RUNS, args)
    if _finish(cfg, args):
        return 0
    if (code := _workers(args, cfg)) is not None:
        return code
    with training_lock(args.outdir):
        train_autoencoder(cfg, args.outdir, init=args.init, restart=args.restart)
    return stop_exit_code()  # 130/143 after a SIGINT/SIGTERM stop (saved, resumable)


def _train_diffusion(args: argparse.Namespace) -> int:
    from pvdm.cli.common import resolve_run_config, training_lock
    from pvdm.presets import DIFFUSION_RUNS
    from pvdm.train.diffusion import DiffusionRunConfig, train_diffusion
    from pvdm.train.interrupt import stop_exit_code

    if args.autoencoder is not None:
        args.set.insert(0, f"autoencoder={args.autoencoder}")
    cfg = resolve_run_config(DiffusionRunConfig, DIFFUSION_RUNS, args)
    if _finish(cfg, args):
        return 0
    if (code := _workers(args, cfg)) is not None:
        return code
    with training_lock(args.outdir):
        train_diffusion(cfg, args.outdir, restart=args.restart)
    return stop_exit_code()  # 130/143 after a SIGINT/SIGTERM stop (saved, resumable)


def _distill(args: argparse.Namespace) -> int:
    from pvdm.cli.common import resolve_run_config, training_lock
    from pvdm.errors import ConfigError
    from pvdm.presets import DISTILL_RUNS
    from pvdm.train.distill import DistillRunConfig, distill
    from pvdm.train.interrupt import stop_exit_code

    if args.teacher is not None:
        args.set.insert(0, f"teacher={args.teacher}")
    if args.steps is not None:
        args.set.insert(0, f"distill.student_steps={args.steps}")
    if args.data is not None:  # the teacher's latent cache
        args.set.insert(0, f"latents={args.data}")
        args.data = None
    cfg = resolve_run_config(DistillRunConfig, DISTILL_RUNS, args)
    if _finish(cfg, args):
        return 0
    if str(args.workers) != "1":
        raise ConfigError("pvdm distill runs in one process; drop --workers")
    with training_lock(args.outdir):
        distill(cfg, args.outdir, restart=args.restart)
    return stop_exit_code()  # 130/143 after a SIGINT/SIGTERM stop (saved, resumable)


def _cache_latents(args: argparse.Namespace) -> int:
    from pvdm.runs import run_lock

    with run_lock(args.out, "--out"):  # two builds into one folder would mix their shards
        return _build_cache(args)


def _build_cache(args: argparse.Namespace) -> int:
    import torch

    from pvdm.config import apply_overrides
    from pvdm.data import DataConfig, open_dataset
    from pvdm.diffusion.cache import build_latent_cache
    from pvdm.models import load_model
    from pvdm.runs import resolve_snapshot
    from pvdm.runtime import resolve_device

    device = resolve_device(args.device)
    ae_path = resolve_snapshot(args.autoencoder)  # recorded in the cache's manifest
    ae = load_model(args.autoencoder, expect="autoencoder").to(device)
    frames = ae.config.frames
    data = apply_overrides(
        DataConfig(
            path=args.data,
            layout=args.layout,
            split=args.split,
            resolution=ae.config.resolution,
            frames=frames,
        ),
        [o.removeprefix("data.") for o in args.set],
    )
    dataset = open_dataset(data, clip_frames=2 * frames)
    build_latent_cache(
        ae,
        dataset,
        args.out,
        frames=frames,
        windows_per_video=args.windows,
        seed=args.seed,
        batch_size=args.batch_size,
        dtype=getattr(torch, args.dtype),
        info={"autoencoder": str(Path(ae_path).resolve()), "data": data.path, "split": data.split},
    )
    print(f"latent cache written to {args.out}")
    return 0
