"""Writing generated videos: one file (or frame folder) per video, a PNG grid, settings.json.

Each video is written once, in the format asked for: `mp4` (H.264, small, for viewing), `gif`,
or a lossless one for evaluation, `png` (a folder of PNG frames per video) or `mkv` (FFV1).
Lossy files bias FVD (H.264 smooths away artifacts the detector penalises): evaluate `png`
or `mkv` samples, or the model directly (`pvdm eval --model`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from pvdm.atomic import atomic_write_text
from pvdm.errors import PvdmError

log = logging.getLogger(__name__)

# The files write_samples writes (and temporary files of its atomic writes), and its PNG frame
# folders (and their temporary folders).
_OWN_FILE = re.compile(r"^(sample-\d{4,}\.(mp4|gif|mkv)|grid\.png|settings\.json|\..*\.tmp)$")
_OWN_FOLDER = re.compile(r"^\.?sample-\d{4,}(\..+)?$")


def _is_own(p: Path) -> bool:
    if p.is_file():
        return bool(_OWN_FILE.match(p.name))
    if p.is_dir() and not p.is_symlink() and _OWN_FOLDER.match(p.name):
        return all(f.is_file() and f.suffix == ".png" for f in p.iterdir())
    return False


def prepare_output_folder(out: str | Path) -> Path:
    """Make `out` ready for write_samples: create it, or clear the files an earlier
    `pvdm sample`/`continue` wrote there (sample-*.mp4/.gif/.mkv, sample-* PNG frame folders,
    grid.png, settings.json), so no stale video sits beside the new settings.json. A folder
    holding anything else is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PvdmError(f"--out {out} is a file; give a folder for the videos")
    if out.is_dir():
        entries = list(out.iterdir())
        foreign = [p.name for p in entries if not _is_own(p)]
        if foreign:
            shown = ", ".join(sorted(foreign)[:3])
            raise PvdmError(
                f"--out {out} holds files pvdm sample did not write ({shown}); "
                "choose an empty or new folder"
            )
        if entries:
            log.info("removing %d files of an earlier run from %s", len(entries), out)
            for p in entries:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


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
    frames `sample-<i>/`); returns their paths. settings.json records the format.

    Call `prepare_output_folder(out)` once before the sampling: a file that appears in `out`
    meanwhile does not throw the finished videos away (this writes beside it)."""
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
