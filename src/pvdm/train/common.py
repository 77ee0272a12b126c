"""What both training loops share: the run folder's config and log, precision, guarded steps."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pvdm.config import config_to_dict, load_config, save_config
from pvdm.errors import ConfigError, PvdmError
from pvdm.runs import RunFolder
from pvdm.runtime import DistInfo

__all__ = [
    "GuardedUpdate",
    "grad_norm",
    "make_scaler",
    "no_sync_unless",
    "prepare_run",
    "scheduled_lr",
    "set_lr",
    "warmup_lr",
]

log = logging.getLogger(__name__)

# Settings that may change when a run is resumed; anything else must match the saved config.
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.lr_decay_frac",  # a schedule knob like max_steps: the demo re-plans the decay
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.keep_snapshots",
    "train.preview_every",
    "train.eval_every",
    "train.device",
    "train.tensorboard",
    "data.num_workers",
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equality of config values in which NaN equals NaN (and [nan] equals [nan])."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def prepare_run(run: RunFolder, cfg: Any, info: DistInfo) -> None:
    """Create the run folder, check a resumed run's config, write the resolved config, log to file.

    Re-running a command on an existing run folder resumes it; the resolved config must then
    equal the saved one except for the settings in RESUMABLE_CHANGES. A folder that holds a
    config but nothing trained (a first start that failed) takes the new settings.
    """
    trained = bool(run.states()) or any(run.snapshots.glob("*/model.safetensors"))
    if run.config.is_file() and not trained:
        log.info("%s holds no training state yet; its saved settings are replaced", run.root)
    elif run.config.is_file():
        saved = _flatten(config_to_dict(load_config(type(cfg), run.config)))
        now = _flatten(config_to_dict(cfg))
        changed = [
            k for k in now if not same_value(saved.get(k), now[k]) and k not in RESUMABLE_CHANGES
        ]
        if changed:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed[:5])
            raise ConfigError(
                f"{run.root} holds a run with different settings ({details}). Re-run with the "
                "same settings to resume it, or choose a new --outdir."
            )
    if info.is_main:
        run.create()
        save_config(cfg, run.config)
        logger = logging.getLogger("pvdm")
        target = str(run.log.resolve())
        if not any(getattr(h, "baseFilename", None) == target for h in logger.handlers):
            # one handler per log file: a second run in this process (the demo's calibration
            # and its training) must not write every line twice
            handler = logging.FileHandler(run.log, encoding="utf-8")
            fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
            handler.setFormatter(logging.Formatter(fmt))
            logger.addHandler(handler)
        if logging.getLogger("pvdm").level == logging.NOTSET:
            logging.getLogger("pvdm").setLevel(logging.INFO)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, active only for fp16."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def grad_norm(params: Iterable[torch.nn.Parameter]) -> float:
    """The global gradient L2 norm (inf or nan when any gradient is not finite)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch._foreach_norm(grads)
    return float(torch.linalg.vector_norm(torch.stack([n.float() for n in norms])))


class GuardedUpdate:
    """Unscale, clip and apply an optimizer update unless the loss or the gradient is not finite.

    A skipped update is logged and counted (`skipped_nonfinite` in the stats); after
    `max_in_a_row` skips in a row the run stops with one error naming the last good checkpoint.
    """

    def __init__(self, max_in_a_row: int, checkpoints: Path, hint: str, what: str = ""):
        self.max_in_a_row = max_in_a_row
        self.checkpoints = checkpoints
        self.hint = hint
        self.what = what  # e.g. "discriminator": names the stat and the log line
        self.in_a_row = 0

    def __call__(
        self,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        params: list[torch.nn.Parameter] | list[list[torch.nn.Parameter]],
        grad_clip: float | None,
        loss: float,
        step: int,
        monitor: Any,
    ) -> float:
        """Apply the update of `step`; the gradient norm before clipping. `params` may be a list
        of groups (lists), each clipped to `grad_clip` on its own."""
        groups = params if params and isinstance(params[0], list) else [params]
        scaler.unscale_(opt)
        norm = grad_norm([p for group in groups for p in group])
        if grad_clip is not None:
            for group in groups:
                torch.nn.utils.clip_grad_norm_(group, grad_clip)
        if math.isfinite(norm) and math.isfinite(loss):
            scaler.step(opt)
            self.in_a_row = 0
        else:
            self.in_a_row += 1
            monitor.add({"skipped_nonfinite" + (f"_{self.what}" if self.what else ""): 1.0})
            log.warning(
                "step %d: non-finite %sloss or gradient; update skipped (%d in a row)",
                step,
                f"{self.what} " if self.what else "",
                self.in_a_row,
            )
            if self.in_a_row >= self.max_in_a_row:
                raise PvdmError(
                    f"{self.in_a_row} non-finite steps in a row at step {step}; stopping. "
                    f"The last good checkpoint is in {self.checkpoints}; {self.hint}."
                )
        scaler.update()
        return norm


def warmup_lr(base_lr: float, warmup_steps: int, step: int) -> float:
    """Linear warm-up from base_lr / warmup_steps to base_lr, then constant."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return base_lr
    return base_lr * (step + 1) / warmup_steps


def scheduled_lr(
    base_lr: float, warmup_steps: int, step: int, max_steps: int, decay_frac: float = 0.0
) -> float:
    """`warmup_lr`, then a linear decay towards 0 over the last `decay_frac` of `max_steps`."""
    lr = warmup_lr(base_lr, warmup_steps, step)
    decay_steps = decay_frac * max_steps
    if decay_steps <= 0:
        return lr
    return lr * min(1.0, (max_steps - step) / decay_steps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def no_sync_unless(module: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's `no_sync()` (no gradient all-reduce) on accumulation micro-batches before the last."""
    if isinstance(module, DDP) and not sync:
        return module.no_sync()
    return contextlib.nullcontext()
