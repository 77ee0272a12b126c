"""Training states: what a run saves in RUN/checkpoints/ (the layout: `pvdm.runs.RunFolder`).

Training states are plain dicts of tensors and numbers saved with `torch.save` and loaded with
`torch.load(weights_only=True)`; every write goes to a temporary name first and is renamed, so a
crash mid-write never leaves a broken or half-new file. The newest N *readable* `state-*.pt`
are kept: a state that cannot be read (a truncated copy, an interrupted rsync) is never counted
and never deleted, so it can never push the good states out.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import torch

from pvdm.atomic import atomic_path
from pvdm.config import config_to_dict
from pvdm.errors import CheckpointError
from pvdm.runs import RunFolder

log = logging.getLogger(__name__)


def looks_readable(path: Path) -> bool:
    """A cheap check that a state file is whole: torch.save writes a zip archive whose central
    directory is at the very end, so a truncated or foreign file fails here."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def save_training_state(run: RunFolder, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write the training state of `step` atomically and keep the newest `keep` readable states.

    Unreadable states are neither counted nor deleted (they may be a copy still arriving); the
    state just written is always kept.
    """
    path = run.state_path(step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    readable = [p for _, p in run.states() if p == path or looks_readable(p)]
    for old in readable[: max(len(readable) - max(keep, 1), 0)]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training state (tensors and plain values only: no code is unpickled)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state not found: {path}") from None
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"cannot read training state {path}: {e}") from None


def load_latest_training_state(run: RunFolder, restart: bool = False) -> dict[str, Any] | None:
    """The newest readable training state of a run, or None for a new run.

    A state that cannot be read (e.g. damaged by a failing disk) is skipped with a warning in
    favour of the previous one. When states exist but none can be read, this is an error rather
    than a silent restart from step 0, unless `restart` is set (the files are left in place).
    """
    states = run.states()
    for _, path in reversed(states):
        try:
            state = load_training_state(path)
        except CheckpointError as e:
            log.warning("%s; trying an older state", e)
            continue
        log.info("resuming from %s (step %d)", path, state["step"])
        return state
    if states and not restart:
        raise CheckpointError(
            f"none of the {len(states)} training states in {run.checkpoints} can be read; "
            "restore a good copy there to resume, or re-run with --restart to start again from "
            "step 0 (the unreadable files are left in place)"
        )
    if states:
        log.warning(
            "every training state in %s is unreadable; starting from step 0", run.checkpoints
        )
    return None


def save_named_training_state(run: RunFolder, name: str, state: dict[str, Any]) -> Path:
    """A training state under a fixed name (e.g. best.pt), never pruned."""
    path = run.checkpoints / f"{name}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


class TrainingState:
    """The one layout of a training state, for both loops.

    `parts` are what has a state dict (model, optimizers, scalers, the EMA, ...) or is a plain
    dict of numbers (the autoencoder's guard); a part that is None (no EMA) is saved as None.
    `capture(step)` gives {"step", <part>..., "config"}; `restore(state)` loads every part
    back and returns the step.
    """

    def __init__(self, config: Any, **parts: Any) -> None:
        self.config = config_to_dict(config)
        self.parts = parts

    def capture(self, step: int) -> dict[str, Any]:
        """The state to save after `step` steps."""
        state: dict[str, Any] = {"step": step}
        for name, part in self.parts.items():
            if part is None or isinstance(part, dict):
                state[name] = None if part is None else dict(part)
            else:
                state[name] = part.state_dict()
        state["config"] = self.config
        return state

    def restore(self, state: dict[str, Any]) -> int:
        """Load a captured state into the parts; the step it was saved at."""
        for name, part in self.parts.items():
            if part is None or state[name] is None:
                continue
            if isinstance(part, dict):
                part.update(state[name])
            else:
                part.load_state_dict(state[name])
        return int(state["step"])
