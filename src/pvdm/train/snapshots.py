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

from pvdm.data import from_model_range, write_video
from pvdm.metrics.recon import reconstruct
from pvdm.runs import RunFolder

__all__ = ["save_preview", "save_snapshot"]

log = logging.getLogger(__name__)


def save_snapshot(
    run: RunFolder,
    name: int | str,
    model: torch.nn.Module,
    step: int,
    keep: int = 0,
    **metadata: Any,
) -> Path:
    """Save `model` as a pretrained folder; keep only the newest `keep` step snapshots (0 = all)."""
    path = run.snapshot(name)
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
    recon = from_model_range(reconstruct(model, clips, precision=precision)).cpu()
    side = torch.cat([clips, recon], dim=-1)  # [B, C, T, H, 2W]
    path = run.previews / f"reconstruction-{step:08d}.gif"
    write_video(path, side)
    monitor.add_video("reconstruction", side, step)
    return path
