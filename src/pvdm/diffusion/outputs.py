"""Writing generated videos: one mp4 and one GIF per video, a PNG grid, and settings.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pvdm.atomic import atomic_write_text


def write_samples(
    out: str | Path, videos: torch.Tensor, settings: dict[str, Any], *, fps: float = 8.0
) -> list[Path]:
    """Write uint8 videos [B, C, T, H, W] into `out`; returns the mp4 paths."""
    from pvdm.data import write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, video in enumerate(videos):
        stem = out / f"sample-{i:04d}"
        write_video(stem.with_suffix(".mp4"), video, fps=fps)
        write_video(stem.with_suffix(".gif"), video, fps=fps)
        paths.append(stem.with_suffix(".mp4"))
    every = max(1, videos.shape[2] // 16)  # at most ~16 frames per row
    write_video(out / "grid.png", videos, every=every)
    atomic_write_text(out / "settings.json", json.dumps(settings, indent=2))
    return paths
