"""The training settings shared by both stages (autoencoder and diffusion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pvdm.errors import ConfigError


@dataclass
class TrainConfig:
    """Optimisation, precision, EMA, checkpointing and logging of one training run.

    Counts are optimizer steps. `batch_size` is global: each of N processes gets batch_size / N,
    and `grad_accum` micro-batches of that size make one step.
    """

    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    warmup_steps: int = 0
    # linear decay of the learning rate to 0 over this last fraction of max_steps (0 = constant,
    # the official recipe; the debug presets use it: short runs end better on a low rate)
    lr_decay_frac: float = 0.0
    grad_clip: float | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    use_ema: bool = True
    ema_decay: float = 0.9999
    ema_every: int = 25
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    keep_snapshots: int = 5  # newest step snapshots kept (0 = all); snapshots/best is never pruned
    preview_every: int = 0
    eval_every: int = 0
    max_nonfinite: int = 20
    tensorboard: bool = True

    def validate(self) -> None:
        positive = {
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "ema_every": self.ema_every,
            "log_every": self.log_every,
            "checkpoint_every": self.checkpoint_every,
            "keep_checkpoints": self.keep_checkpoints,
            "max_nonfinite": self.max_nonfinite,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {value}")
        for name, value in {
            "warmup_steps": self.warmup_steps,
            "preview_every": self.preview_every,
            "keep_snapshots": self.keep_snapshots,
            "eval_every": self.eval_every,
        }.items():
            if value < 0:
                raise ConfigError(f"train.{name} must be >= 0 (0 = off), got {value}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if not 0.0 <= self.lr_decay_frac <= 1.0:
            raise ConfigError(f"train.lr_decay_frac must lie in [0, 1], got {self.lr_decay_frac}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must lie in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ConfigError(f"train.ema_decay must lie in [0, 1], got {self.ema_decay}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"train.seed must lie in [0, 2**63), got {self.seed}")
        from pvdm.runtime import check_device

        check_device(self.device, "train.device")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be positive or null, got {self.grad_clip}")
