"""One generation request: what to sample and how, its defaults, its checks and its record.

Every caller that generates videos (`pvdm sample`, `pvdm continue`, `pvdm serve`, evaluation, the
demo and the training preview) describes what it wants as a `SamplingConfig` and hands it to
`PVDMPipeline`, which validates it against the model (`PVDMPipeline.resolve`) and runs it. The
defaults live here once; a sampler's default step count lives in its `SamplerSpec`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pvdm.diffusion.samplers import DEFAULT_ETA, SAMPLERS
from pvdm.errors import ConfigError

# the best measured setting at <= 8 network evaluations (samplers.py, docs/results.md)
DEFAULT_SAMPLER = "ddim-quad"
SEED_LIMIT = 2**63  # seeds are non-negative 63-bit integers (torch.Generator takes 64 bits)

# how the CLI spells the fields whose flag is not `--<field>`
_FLAGS = {"labels": "--class", "reencode": "--latent-pass-through"}


@dataclass(frozen=True)
class SamplingConfig:
    """A generation request.

    `num` videos of `frames` frames (None: one clip; longer videos are made clip by clip);
    video i uses `seeds[i]`, by default `seed + i`. `sampler` None is the model's default (a
    distilled student's own grid) or `DEFAULT_SAMPLER`; `steps` None is the sampler's default;
    `eta` matters to the samplers that read it (`SamplerSpec.uses_eta`). `guidance` is the official frame guidance
    (conditional clips only); `labels` (one for all videos, or one per video) and
    `class_guidance` are for class-conditional models. `reencode`: each next clip is conditioned
    on the re-encoded frames of the previous one (official), else on its latent.
    """

    num: int = 1
    frames: int | None = None
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    sampler: str | None = None
    steps: int | None = None
    eta: float = DEFAULT_ETA
    guidance: float = 0.0
    labels: tuple[str | int, ...] | None = None
    class_guidance: float = 0.0
    reencode: bool = True
    batch_size: int = 8

    def __post_init__(self) -> None:
        # lists become tuples, so that a request stays hashable and cannot change under a run
        for name in ("seeds", "labels"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                if isinstance(value, str | int):
                    value = (value,)
                object.__setattr__(self, name, tuple(value))

    def replace(self, **changes: Any) -> SamplingConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def seed_list(self) -> list[int]:
        """The seed of each video."""
        if self.seeds is not None:
            return list(self.seeds)
        return [self.seed + i for i in range(self.num)]

    @property
    def spec(self):
        """The sampler's `SamplerSpec` (`DEFAULT_SAMPLER`'s while none is set)."""
        return SAMPLERS[self.sampler or DEFAULT_SAMPLER]

    def validate(
        self, num_timesteps: int, clip_frames: int | None = None, *, flags: bool = False
    ) -> SamplingConfig:
        """This request checked, with its defaults filled in (sampler, steps, frames; `num` follows
        `seeds` when they are given, which stay None otherwise, so that a resolved request can
        still be changed to another count or seed). A value out of range is one `ConfigError`
        naming the field (as a CLI flag with `flags=True`)."""

        def name(field: str) -> str:
            return _FLAGS.get(field, "--" + field.replace("_", "-")) if flags else field

        def need(ok: bool, text: str) -> None:
            if not ok:
                raise ConfigError(text)

        sampler = self.sampler or DEFAULT_SAMPLER
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        for field in ("num", "batch_size", "steps", "frames"):
            value = getattr(self, field)
            if value is not None:
                need(
                    _is_int(value) and value >= 1,
                    f"{name(field)} must be at least 1, got {value}",
                )
        seeds = self.seed_list
        need(bool(seeds), f"{name('seeds')} is empty; give at least one seed")
        need(
            all(_is_int(s) and 0 <= s < SEED_LIMIT for s in [self.seed, *seeds]),
            f"{name('seed')} must lie in [0, 2**63 - {name('num')}), got "
            f"{self.seed if self.seeds is None else self.seeds}",
        )
        need(
            _is_number(self.eta) and 0 <= self.eta <= 1,
            f"{name('eta')} must lie in [0, 1], got {self.eta}",
        )
        for field in ("guidance", "class_guidance"):
            value = getattr(self, field)
            need(
                _is_number(value) and math.isfinite(value) and value >= 0,
                f"{name(field)} must be >= 0, got {value}",
            )
        if self.labels is not None:
            need(
                len(self.labels) in (1, len(seeds)),
                f"give one class for all videos or one per video, got {len(self.labels)} for "
                f"{len(seeds)}",
            )
        need(
            self.class_guidance == 0 or self.labels is not None,
            f"{name('class_guidance')} needs {name('labels')}",
        )
        steps = self.spec.resolve_steps(sampler, self.steps, num_timesteps)
        frames = self.frames if self.frames is not None else clip_frames
        return self.replace(
            sampler=sampler,
            num=len(seeds),
            steps=steps,
            frames=frames,
            eta=float(self.eta),
            guidance=float(self.guidance),
            class_guidance=float(self.class_guidance),
        )

    def label(self) -> str:
        """A short name of the sampling, e.g. `DDIM-50 eta 1` (for charts and reports)."""
        text = f"{self.spec.title}-{self.steps if self.steps is not None else 'default'}"
        return text + (f" eta {self.eta:g}" if self.spec.uses_eta else "")

    def record(self) -> dict[str, Any]:
        """What a settings.json says about this request (validate it first)."""
        return {
            "num": self.num,
            "frames": self.frames,
            "seeds": self.seed_list,
            "sampler": self.sampler or DEFAULT_SAMPLER,
            "steps": self.steps,
            "eta": self.eta if self.spec.uses_eta else None,
            "guidance": self.guidance,
            "class": None if self.labels is None else _one_or_all(self.labels),
            "class_guidance": self.class_guidance if self.labels is not None else None,
            "reencode": self.reencode,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _one_or_all(labels: Sequence[str | int]) -> Any:
    return labels[0] if len(set(labels)) == 1 else list(labels)
