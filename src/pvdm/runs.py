"""Where a training run keeps its inference weights, and how a model path finds them.

A run folder (see `pvdm.train.checkpoint.RunFolder` for everything a run writes) keeps its
inference snapshots, each a pretrained-model folder (`config.json` + `model.safetensors`), in

    RUN/snapshots/step-<8 digits>/   one per saved step (the newest `train.keep_snapshots`)
    RUN/snapshots/best/              the best held-out evaluation (autoencoder runs)

Inference code (`pvdm.models.load_model`, the pipeline, evaluation) resolves a run folder to
one of them here, without importing the training code.
"""

from __future__ import annotations

from pathlib import Path

SNAPSHOTS = "snapshots"
BEST = "best"


def snapshot_dir(root: str | Path, name: int | str) -> Path:
    """RUN/snapshots/step-<8 digits> for a step, RUN/snapshots/<name> otherwise."""
    return Path(root) / SNAPSHOTS / (f"step-{name:08d}" if isinstance(name, int) else name)


def resolve_snapshot(path: str | Path) -> Path:
    """A model path for inference: a pretrained folder or file as is; for a run folder (or its
    snapshots/ folder, which a diffusion run's pipeline.json names), its best snapshot if it has
    one, else its newest step snapshot."""
    path = Path(path)
    snaps = path if path.name == SNAPSHOTS else path / SNAPSHOTS
    if snaps.is_dir():
        if (snaps / BEST / "config.json").is_file():
            return snaps / BEST
        steps = sorted(p for p in snaps.glob("step-*") if (p / "config.json").is_file())
        if steps:
            return steps[-1]
    return path
