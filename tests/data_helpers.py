"""Helpers shared by the data and reliability tests: fixture paths, small encoded videos, and
a deadline for code that must not hang."""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pvdm.data.write import encode_video

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

UCF_FRAMES = {
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": 164,
    "CricketShot/v_CricketShot_g04_c01.avi": 79,
}
CLIP_FRAMES = {
    "mmaction2_demo_demo.mp4": 280,
    "mmaction2_test.mp4": 300,
    "mmaction2_demo_demo_spatiotemporal_det.mp4": 57,
    "torchcodec_nasa_13013.mp4": 325,
}

# name -> (suffix, codec, pix_fmt, max_b_frames); every one decodes to yuv/rgb content.
FORMATS = {
    "mp4": (".mp4", "libx264", "yuv420p", None),
    "mkv": (".mkv", "libx264", "yuv420p", None),
    "webm-vp9": (".webm", "libvpx-vp9", "yuv420p", None),
    "webm-vp8": (".webm", "libvpx", "yuv420p", None),
    "mov": (".mov", "libx264", "yuv420p", None),
    "avi-bframes": (".avi", "mpeg4", "yuv420p", 2),
    "avi": (".avi", "mpeg4", "yuv420p", 0),
    "gif": (".gif", "gif", "rgb8", None),
}


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when the fixtures are absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared video fixture {path} not found (needs ../shared/data)")
    return path


@functools.lru_cache(maxsize=1)
def real_frames() -> np.ndarray:
    """40 real frames `[40, 96, 160, 3]` (cut from a shared clip; synthetic if it is absent)."""
    path = SHARED_DATA / "clips" / "torchcodec_nasa_13013.mp4"
    if path.exists():
        from pvdm.data.decode import decode_all

        return np.ascontiguousarray(decode_all(path)[100:140, 40:136, 80:240])
    from pvdm.data.synthetic import SyntheticVideos

    return SyntheticVideos(1, 40, 160).frames(0, range(40))[:, 32:128]


def encode(path: Path, name: str, frames: np.ndarray | None = None, *, gop: int = 8) -> Path:
    """Encode `frames` (default: `real_frames()`) in format `name` of `FORMATS` at `path`."""
    suffix, codec, pix_fmt, bframes = FORMATS[name]
    frames = real_frames() if frames is None else frames
    target = path.with_suffix(suffix)
    encode_video(
        target,
        frames,
        codec=codec,
        pix_fmt=pix_fmt,
        gop=None if codec == "gif" else gop,
        max_b_frames=bframes,
    )
    return target


def write_frames(folder: Path, frames: np.ndarray, suffix: str = ".jpg") -> Path:
    """Write frames `[T, H, W, 3]` as `folder/frame00000<suffix>`, ..."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame{t:05d}{suffix}", quality=95)
    return folder


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging when the block runs longer than `seconds`."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
