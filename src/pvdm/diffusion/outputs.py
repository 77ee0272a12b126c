"""Writing generated videos: one mp4 and one GIF per video, a PNG grid, and settings.json."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from pvdm.atomic import atomic_write_text
from pvdm.errors import PvdmError

log = logging.getLogger(__name__)

# The files write_samples writes (and temporary files of its atomic writes).
_OWN_FILE = re.compile(r"^(sample-\d{4,}\.(mp4|gif)|grid\.png|settings\.json|\..*\.tmp)$")


def prepare_output_folder(out: str | Path) -> Path:
    """Make `out` ready for write_samples: create it, or clear the files an earlier
    `pvdm sample`/`continue` wrote there (sample-*.mp4/.gif, grid.png, settings.json), so no
    stale video sits beside the new settings.json. A folder holding anything else is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PvdmError(f"--out {out} is a file; give a folder for the videos")
    if out.is_dir():
        entries = list(out.iterdir())
        foreign = [p.name for p in entries if not (p.is_file() and _OWN_FILE.match(p.name))]
        if foreign:
            shown = ", ".join(sorted(foreign)[:3])
            raise PvdmError(
                f"--out {out} holds files pvdm sample did not write ({shown}); "
                "choose an empty or new folder"
            )
        if entries:
            log.info("removing %d files of an earlier run from %s", len(entries), out)
            for p in entries:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_samples(
    out: str | Path, videos: torch.Tensor, settings: dict[str, Any], *, fps: float = 8.0
) -> list[Path]:
    """Write uint8 videos [B, C, T, H, W] into `out`; returns the mp4 paths."""
    from pvdm.data import write_video

    out = prepare_output_folder(out)
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
