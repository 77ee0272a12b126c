"""Writing videos: H.264 mp4 (PyAV), looping GIF (Pillow), PNG frame grids, lossless FFV1 mkv
and PNG frame folders, atomically.

Not in the official code, which logs videos to TensorBoard only. Input is uint8
`[B, C, T, H, W]` (or one video `[C, T, H, W]`); several videos are tiled into a grid. mp4 and
GIF are lossy (H.264's 4:2:0 chroma and quantisation, GIF's 256 colours) and bias FVD: for
evaluation write `.mkv` (FFV1, bit-exact) or PNG frame folders (`write_frame_folder`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from einops import rearrange
from PIL import Image

from pvdm.atomic import atomic_path, fsync_dir, usual_mode

SUFFIXES = (".mp4", ".gif", ".png", ".mkv")
LOSSLESS_SUFFIXES = (".mkv", ".png")  # what write_video writes without loss (.png: a grid)


def write_video(
    path: str | Path,
    video: torch.Tensor | np.ndarray,
    *,
    fps: float = 8,
    every: int = 1,
    pad: int = 2,
) -> Path:
    """Write uint8 `[B, C, T, H, W]` or `[C, T, H, W]` to .mp4, .gif, .mkv or .png (by suffix).

    mp4, gif and mkv (lossless FFV1) show the videos side by side in a grid (about square); png
    is a grid of frames
    with one row per video and one column per `every`-th frame. Cells are separated by `pad`
    white pixels. Returns the path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"cannot write {path}: use a .mp4, .gif, .mkv or .png file name")
    batch = _as_batch(video)
    if suffix == ".png":
        write_png_grid(path, batch, every=every, pad=pad)
    else:
        frames = tile_videos(batch, pad=pad)
        if suffix == ".mp4":
            write_mp4(path, frames, fps=fps)
        elif suffix == ".mkv":
            write_lossless_mkv(path, frames, fps=fps)
        else:
            write_gif(path, frames, fps=fps)
    return path


def tile_videos(video: torch.Tensor, *, pad: int = 2, cols: int | None = None) -> np.ndarray:
    """uint8 `[B, C, T, H, W]` -> frames `[T, H', W', 3]` with the videos in a grid."""
    batch = _as_batch(video)
    count, _, _, height, width = batch.shape
    cols = cols or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    frames = rearrange(batch, "b c t h w -> b t h w c").numpy()
    grid = np.full(
        (frames.shape[1], rows * (height + pad) - pad, cols * (width + pad) - pad, 3),
        255,
        dtype=np.uint8,
    )
    for i in range(count):
        top, left = (i // cols) * (height + pad), (i % cols) * (width + pad)
        grid[:, top : top + height, left : left + width] = frames[i]
    return grid


def write_png_grid(path: str | Path, video: torch.Tensor, *, every: int = 1, pad: int = 2) -> None:
    """PNG of uint8 `[B, C, T, H, W]`: rows are videos, columns every `every`-th frame."""
    batch = _as_batch(video)[:, :, ::every]
    count, _, steps, height, width = batch.shape
    frames = rearrange(batch, "b c t h w -> b t h w c").numpy()
    grid = np.full(
        (count * (height + pad) - pad, steps * (width + pad) - pad, 3), 255, dtype=np.uint8
    )
    for b in range(count):
        for t in range(steps):
            top, left = b * (height + pad), t * (width + pad)
            grid[top : top + height, left : left + width] = frames[b, t]
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def write_mp4(path: str | Path, frames: np.ndarray, *, fps: float = 8, crf: int = 18) -> None:
    """H.264 yuv420p mp4 of uint8 frames `[T, H, W, 3]`; odd sizes are padded by one pixel."""
    frames = _even(frames)
    _, height, width, _ = frames.shape
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_lossless_mkv(path: str | Path, frames: np.ndarray, *, fps: float = 8) -> None:
    """Lossless FFV1 (RGB) Matroska of uint8 frames `[T, H, W, 3]`: decodes bit-exactly."""
    encode_video(
        path, np.ascontiguousarray(frames), codec="ffv1", fps=Fraction(fps).limit_denominator(1001),
        pix_fmt="bgr0", gop=None,
    )  # fmt: skip


def write_frame_folder(folder: str | Path, video: torch.Tensor | np.ndarray) -> Path:
    """One uint8 video `[C, T, H, W]` as PNG frames `folder/000000.png ...` (lossless).

    The frames are written into a temporary folder beside `folder`, synced to disk, and the
    folder is renamed into place with the usual mode, so a reader never sees half a video; on
    any error (a full disk) the temporary folder is removed and nothing is left behind.
    """
    folder = Path(folder)
    batch = _as_batch(video)
    if batch.shape[0] != 1:
        raise ValueError(f"write_frame_folder writes one video, got {batch.shape[0]}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for t, frame in enumerate(rearrange(batch[0], "c t h w -> t h w c").numpy()):
            with open(tmp / f"{t:06d}.png", "wb") as f:
                Image.fromarray(frame).save(f, format="PNG")
                f.flush()
                os.fsync(f.fileno())  # the frames are on disk before the name says "complete"
        os.chmod(tmp, usual_mode(folder=True))  # mkdtemp makes it private (0700)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_gif(path: str | Path, frames: np.ndarray, *, fps: float = 8) -> None:
    """Looping GIF of uint8 frames `[T, H, W, 3]`.

    Pillow stores a frame identical to the one before it as a longer display time of that
    one, so a GIF of a still scene holds fewer frames than `T` but plays for as long.
    """
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, round(1000 / fps / 10) * 10)  # GIF stores 1/100 s; browsers clamp <20ms
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=duration,
            loop=0,
            optimize=False,
        )


def _as_batch(video: torch.Tensor | np.ndarray) -> torch.Tensor:
    video = torch.as_tensor(video)
    if video.dtype != torch.uint8:
        raise TypeError(
            f"write_video needs uint8 videos, got {video.dtype}; convert model output with "
            "pvdm.data.from_model_range"
        )
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[1] not in (1, 3):
        raise ValueError(
            f"expected a video [B, C, T, H, W] or [C, T, H, W], got {tuple(video.shape)}"
        )
    if video.shape[1] == 1:
        video = video.expand(-1, 3, -1, -1, -1)
    return video.detach().cpu()


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad height and width to even numbers (yuv420p needs them) by repeating the edge."""
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frames)


def encode_video(
    path: str | Path,
    frames: np.ndarray,
    *,
    codec: str = "libx264",
    fps: int | Fraction = 25,
    pix_fmt: str = "yuv420p",
    gop: int | None = 12,
    max_b_frames: int | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """Encode uint8 frames `[T, H, W, 3]` with any PyAV codec (tests and benchmarks use it).

    The container follows the suffix (.mp4, .mkv, .webm, .mov, .avi, .gif).
    """
    _, height, width, _ = frames.shape
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=_format_of(path)) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        if options:
            stream.options = options
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    formats = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov"}
    formats |= {".avi": "avi", ".gif": "gif", ".m4v": "mp4"}
    if suffix not in formats:
        raise ValueError(f"no container known for {suffix}")
    return formats[suffix]
