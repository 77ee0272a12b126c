"""Writing generated videos: one file (or frame folder) per video, a PNG grid, settings.json.

Each video is written once, in the format asked for: `mp4` (H.264, small, for viewing), `gif`,
or a lossless one for evaluation, `png` (a folder of PNG frames per video) or `mkv` (FFV1).
Lossy files bias FVD (H.264 smooths away artifacts the detector penalises): evaluate `png`
or `mkv` samples, or the model directly (`pvdm eval --model`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from pvdm.atomic import atomic_write_text
from pvdm.errors import PvdmError

log = logging.getLogger(__name__)

# The files write_samples writes (and temporary files of its atomic writes), its PNG frame
# folders (and their temporary folders), the staging folder of a write and the folder's lock.
_OWN_FILE = re.compile(
    r"^(sample-\d{4,}\.(mp4|gif|mkv)|grid\.png|settings\.json|\..*\.tmp|\.lock)$"
)
_OWN_FOLDER = re.compile(r"^\.?sample-\d{4,}(\..+)?$")
_STAGING = ".staging"


def _is_own(p: Path) -> bool:
    if p.is_file():
        return bool(_OWN_FILE.match(p.name))
    if p.is_dir() and not p.is_symlink() and p.name == _STAGING:
        return True
    if p.is_dir() and not p.is_symlink() and _OWN_FOLDER.match(p.name):
        return all(f.is_file() and f.suffix == ".png" for f in p.iterdir())
    return False


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def prepare_output_folder(out: str | Path) -> Path:
    """Make `out` ready for write_samples before any sampling: create it, or check that it
    holds only what an earlier `pvdm sample`/`continue` wrote there (sample-*.mp4/.gif/.mkv,
    sample-* PNG frame folders, grid.png, settings.json). A folder holding anything else is
    refused. Nothing is removed here: the earlier samples stay until the new ones are written
    (`write_samples`), so a run stopped midway loses nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PvdmError(f"--out {out} is a file; give a folder for the videos")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if not _is_own(p)]
        if foreign:
            shown = ", ".join(sorted(foreign)[:3])
            raise PvdmError(
                f"--out {out} holds files pvdm sample did not write ({shown}); "
                "choose an empty or new folder"
            )
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

    Everything is written into a staging folder first; only then do the new files replace what
    an earlier run wrote (its files the new ones do not replace are removed), so a full disk or
    a stop midway leaves the earlier samples whole. A file that appeared in `out` meanwhile is
    left alone. Call `prepare_output_folder(out)` once before the sampling."""
    from pvdm.data import write_video
    from pvdm.data.write import write_frame_folder

    if fmt not in FORMATS:
        raise ValueError(f"unknown sample format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    stage = out / _STAGING
    if stage.exists():
        shutil.rmtree(stage)  # what a killed write left
    stage.mkdir(parents=True)
    try:
        names = []
        for i, video in enumerate(videos):
            stem = stage / f"sample-{i:04d}"
            if fmt == "png":
                names.append(write_frame_folder(stem, video).name)
            else:
                names.append(write_video(stem.with_suffix(f".{fmt}"), video, fps=fps).name)
        every = max(1, videos.shape[2] // 16)  # at most ~16 frames per row
        write_video(stage / "grid.png", videos, every=every)
        settings = {**settings, "format": fmt, "lossless": fmt in LOSSLESS_FORMATS}
        atomic_write_text(stage / "settings.json", json.dumps(settings, indent=2))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    new = {p.name for p in stage.iterdir()}
    for old in out.iterdir():  # the earlier run's files that nothing new replaces
        if old.name not in new and old.name not in (_STAGING, ".lock") and _is_own(old):
            _remove(old)
    for name in sorted(new):
        if (out / name).is_dir():
            shutil.rmtree(out / name)  # a folder cannot be replaced in one rename
        os.replace(stage / name, out / name)
    stage.rmdir()
    return [out / name for name in names]
