"""Flags shared by several commands: sampling (a `SamplingConfig` from flags) and training runs.

Training: resolution order: the saved config of an existing run folder (when resuming without
--preset or --config), else --config FILE, else --preset NAME (default `debug`); then the flags
(--data, --max-steps, --checkpoint-every, --seed); then every --set a.b=value, in order.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_sampling_args(parser: argparse.ArgumentParser | Any, *, seed_help: str) -> None:
    """The flags of a `pvdm.diffusion.SamplingConfig`; unset ones keep the request's defaults
    (checked, with the flag named, by `sampling_request`)."""
    parser.add_argument(
        "--sampler",
        help="sampler name, e.g. ddim (official strided DDIM), dpm (DPM-Solver++ 2M), ddpm "
        "(every step) (default: the recommended one; an unknown name lists them all)",
    )
    parser.add_argument("--steps", type=int, help="sampler steps (default: the sampler's own)")
    parser.add_argument("--eta", type=float, help="noise of the stochastic samplers (official: 1)")
    parser.add_argument("--seed", type=int, help=seed_help)


def sampling_request(args: argparse.Namespace, base: Any = None, **fields: Any) -> Any:
    """The `SamplingConfig` the flags describe: `base` (default: the defaults) with each given
    flag (and `fields`) set, checked without a model; messages name the flags."""
    from pvdm.diffusion.sampling import SamplingConfig

    base = base or SamplingConfig()
    if args.sampler is not None and args.sampler != base.sampler:
        base = base.replace(sampler=args.sampler, steps=None)  # the new sampler's own steps
    given = {k: getattr(args, k, None) for k in ("steps", "eta", "seed")}
    request = base.replace(**{k: v for k, v in given.items() if v is not None}, **fields)
    request.validate(num_timesteps=2**31, flags=True)  # the model's limits come later
    return request


def add_run_args(parser: argparse.ArgumentParser, presets: list[str]) -> None:
    """The common training flags."""
    parser.add_argument(
        "--preset", choices=presets, help="named settings (default: debug, or the saved run's)"
    )
    parser.add_argument("--config", type=Path, help="a YAML/JSON config file instead of a preset")
    parser.add_argument("--data", help="dataset folder, latent cache, or 'synthetic'")
    parser.add_argument("--outdir", type=Path, required=True, help="run folder (re-run to resume)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps to train for")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set train.lr=2e-4 (repeatable)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start again from step 0 when every saved training state is unreadable",
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="data-parallel processes on this machine (auto: one per CPU core on a CPU run); "
        "the same run as one process, faster when small models leave cores idle",
    )


def training_lock(outdir: Path):
    """The run-folder lock (see pvdm.runs); under torchrun only rank 0 takes it."""
    import contextlib
    import os

    from pvdm.runs import run_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return run_lock(outdir)


def resolve_run_config(cls: type, presets: dict[str, Any], args: argparse.Namespace) -> Any:
    """The run config the flags describe (see the module docstring)."""
    from pvdm.config import apply_overrides, config_from_dict, config_to_dict, load_config
    from pvdm.errors import ConfigError
    from pvdm.runs import RunFolder

    saved = RunFolder(args.outdir).config
    if args.config is not None and args.preset is not None:
        raise ConfigError(
            "give --preset or --config, not both (a config file holds every setting; change "
            "single values with --set)"
        )
    if args.config is not None:
        cfg = load_config(cls, args.config)
    elif args.preset is None and saved.is_file():
        cfg = load_config(cls, saved)
    else:
        cfg = presets[args.preset or "debug"]()
    overrides = []
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.checkpoint_every is not None:
        overrides.append(f"train.checkpoint_every={args.checkpoint_every}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    cfg = apply_overrides(cfg, [*overrides, *args.set])
    return config_from_dict(cls, config_to_dict(cfg))  # validate every section
