"""Inference snapshots and preview videos written during training (rank 0 only).

A snapshot is a pretrained-model folder (`config.json` + `model.safetensors`, see
pvdm.models.pretrained) holding the weights to use for inference: the EMA weights when the run
keeps an EMA, else the raw ones. `snapshots/step-<step>/` per saved step (the newest
`train.keep_snapshots` kept) and `snapshots/best/` for the best held-out evaluation. Finding
them again (`resolve_snapshot`) belongs to inference and lives in `pvdm.runs`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from pvdm import runs
from pvdm.data import from_model_range, to_model_range, write_video
from pvdm.runs import RunFolder
from pvdm.runtime import autocast, module_device

__all__ = ["save_preview", "save_snapshot", "snapshot_dir"]

log = logging.getLogger(__name__)


def snapshot_dir(run: RunFolder, name: int | str) -> Path:
    """snapshots/step-<8 digits> for a step, snapshots/<name> otherwise (see `pvdm.runs`)."""
    return runs.snapshot_dir(run.root, name)


def save_snapshot(
    run: RunFolder,
    name: int | str,
    model: torch.nn.Module,
    step: int,
    keep: int = 0,
    **metadata: Any,
) -> Path:
    """Save `model` as a pretrained folder; keep only the newest `keep` step snapshots (0 = all)."""
    path = snapshot_dir(run, name)
    model.save_pretrained(path, metadata={"step": step, **metadata})
    if keep > 0:
        steps = sorted(run.snapshots.glob("step-*"))
        for old in steps[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


@torch.no_grad()
def save_preview(
    run: RunFolder,
    step: int,
    model: torch.nn.Module,
    clips: torch.Tensor,
    monitor: Any,
    precision: str,
) -> Path:
    """Real (left) next to reconstructed (right) clips as a GIF, also sent to TensorBoard."""
    device = module_device(model)
    was_training = model.training
    model.eval()
    x = to_model_range(clips.to(device))
    with autocast(precision, device):
        xrec = model(x).float()
    model.train(was_training)
    side = torch.cat([clips.to(device), from_model_range(xrec)], dim=-1)  # [B, C, T, H, 2W]
    path = run.previews / f"reconstruction-{step:08d}.gif"
    write_video(path, side.cpu())
    monitor.add_video("reconstruction", side, step)
    return path
