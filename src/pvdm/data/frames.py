"""Frame folders: a video stored as one image file per frame (SkyTimelapse, extracted frames).

Official `ImageFolderDataset` (reference §6.2) natsorts the files and reads them with PIL
(pyspng for PNG); so do we, with grayscale made RGB, alpha dropped and 16-bit scaled to 8.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pvdm.data.meta import Probe, ReadError, reason_of

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


def natural_key(name: str) -> list[Any]:
    """Sort key that orders `frame2` before `frame10`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frames(folder: str | Path) -> list[str]:
    """Image file names in `folder`, in natural order (hidden files ignored)."""
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
            and e.is_file()
        ]
    return sorted(names, key=natural_key)


def probe_folder(folder: Path) -> Probe:
    """Frame count and size of a frame folder (the first frame is decoded to check it)."""
    try:
        names = list_frames(folder)
    except OSError as e:
        raise ReadError(f"cannot list the folder ({e.strerror or e})") from None
    if not names:
        raise ReadError("no image frames (.jpg, .png, .webp, .bmp) in the folder")
    first = load_image(folder / names[0])
    return Probe("frames", len(names), first.shape[0], first.shape[1], 0.0)


def read_folder(folder: Path, indices: list[int]) -> np.ndarray:
    """Frames `indices` of a frame folder as uint8 `[T, H, W, 3]`."""
    try:
        names = list_frames(folder)
    except OSError as e:
        raise ReadError(f"cannot list the folder ({e.strerror or e})") from None
    if indices[-1] >= len(names):
        raise ReadError(f"the folder now has {len(names)} frames, fewer than when it was scanned")
    frames = [load_image(folder / names[i]) for i in indices]
    height, width = frames[0].shape[:2]
    for t, frame in enumerate(frames):
        if frame.shape[:2] != (height, width):
            # A stray frame of another size: fit it to the clip's first frame.
            img = Image.fromarray(frame).resize((width, height), Image.BILINEAR)
            frames[t] = np.asarray(img)
    return np.stack(frames)


def load_image(path: str | Path) -> np.ndarray:
    """One image as uint8 `[H, W, 3]`: grayscale made RGB, alpha dropped, 16-bit scaled to 8."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                values = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if values.max() > 255 else 255.0
                gray = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if img.mode == "F":
                gray = np.clip(np.round(np.asarray(img)), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            rgb = img.convert("RGB") if img.mode != "RGB" else img
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ReadError(f"cannot read frame {Path(path).name} ({reason_of(e)})") from None
