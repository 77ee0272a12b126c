"""Writing generated videos: one file (or frame folder) per video, a PNG grid, settings.json.

Each video is written once, in the format asked for: `mp4` (H.264, small, for viewing), `gif`,
or a lossless one for evaluation, `png` (a folder of PNG frames per video) or `mkv` (FFV1).
Lossy files bias FVD (H.264 smooths away artifacts the detector penalises): evaluate `png`
or `mkv` samples, or the model directly (`pvdm eval --model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pvdm.atomic import atomic_write_text

FORMATS = ("mp4", "gif", "png", "mkv")
LOSSLESS_FORMATS = ("png", "mkv")


def write_samples(
    out: str | Path,
    videos: torch.Tensor,
    settings: dict[str, Any],
    *,
    fps: float = 8.0,
    fmt: str = "mp4",
) -> list[Path]:
    """Write uint8 videos [B, C, T, H, W] into `out` as `sample-<i>.<fmt>` (png: a folder of
    frames `sample-<i>/`); returns their paths. settings.json records the format."""
    from pvdm.data import write_video
    from pvdm.data.write import write_frame_folder

    if fmt not in FORMATS:
        raise ValueError(f"unknown sample format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, video in enumerate(videos):
        stem = out / f"sample-{i:04d}"
        if fmt == "png":
            paths.append(write_frame_folder(stem, video))
        else:
            paths.append(write_video(stem.with_suffix(f".{fmt}"), video, fps=fps))
    every = max(1, videos.shape[2] // 16)  # at most ~16 frames per row
    write_video(out / "grid.png", videos, every=every)
    settings = {**settings, "format": fmt, "lossless": fmt in LOSSLESS_FORMATS}
    atomic_write_text(out / "settings.json", json.dumps(settings, indent=2))
    return paths
