"""Decoding video files (PyAV) and frame folders, reading only the frames a clip needs.

The official PVDM loader (`tools/dataloader.py`; reference §6.1) decodes every video whole
with `torchvision.io.read_video` and then keeps 16 or 32 frames. Here a clip is read by seeking
to the last keyframe at or before its first frame and decoding forward to its last frame.

Frame index `i` always means the i-th frame that a full decode from the start outputs, so a
clip read by seeking equals the same frames of a full decode. Two ways map decoded frames to
indices:
- *pts mode* (mp4, mov, mkv, webm, ...): the presentation timestamps of the video packets,
  sorted, are the frame order; a decoded frame's pts gives its index.
- *counting mode* (avi, whose demuxer makes up timestamps, and files without usable pts):
  after seeking, the first packet must be a keyframe we know the decode position of, and the
  frames that follow are counted from there.
Whenever a seek lands somewhere unexpected, the read starts over from the beginning of the
file without seeking, which is always right, only slower.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov", ".gif", ".mpg", ".mpeg", ".wmv", ".flv"}
    | {".ogv", ".3gp", ".ts"}
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

# Containers whose demuxer invents timestamps from the packet count (packed B-frames in AVI
# give decoded frames out-of-order pts), so frames are identified by counting instead.
_COUNTING_FORMATS = frozenset({"avi"})


# Pixel formats known to convert to rgb24; others are test-converted once while scanning.
_RGB_READY = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}
    | {"rgb24", "bgr24", "rgba", "bgra", "argb", "abgr", "pal8", "yuva420p"}
)


class ReadError(Exception):
    """A video or frame that cannot be read; the message is the reason, without the path."""


class _Fallback(Exception):
    """A seek landed somewhere the index did not predict; decode from the start instead."""


@dataclass(frozen=True)
class Probe:
    """What reading a video needs: size, frame count and (for files) a keyframe index.

    `keys` holds one `(frame_index, pts, dts)` per keyframe. In pts mode, frame `i` has the
    presentation timestamp `pts_first + i * pts_step` (constant frame rate) or `pts_table[i]`;
    with neither, frames are identified by counting.
    """

    kind: str  # "video" (a file PyAV decodes) or "frames" (a folder of images)
    num_frames: int
    height: int
    width: int
    fps: float
    keys: tuple[tuple[int, int | None, int | None], ...] = ()
    pts_first: int | None = None
    pts_step: int | None = None
    pts_table: tuple[int, ...] | None = None

    @property
    def has_pts(self) -> bool:
        return self.pts_step is not None or self.pts_table is not None

    def index_of_pts(self, pts: int | None) -> int | None:
        """The frame index of a decoded frame's pts, or None if no frame has that pts."""
        if pts is None:
            return None
        if self.pts_step is not None:
            offset = pts - self.pts_first
            index, rest = divmod(offset, self.pts_step)
            return index if rest == 0 and 0 <= index < self.num_frames else None
        if self.pts_table is not None:
            index = bisect.bisect_left(self.pts_table, pts)
            ok = index < len(self.pts_table) and self.pts_table[index] == pts
            return index if ok and index < self.num_frames else None
        return None

    def key_for(self, index: int) -> tuple[int, int | None, int | None] | None:
        """The last keyframe at or before frame `index`."""
        pos = bisect.bisect_right([k[0] for k in self.keys], index) - 1
        return self.keys[pos] if pos >= 0 else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (the scan cache stores these)."""
        return {
            "kind": self.kind,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "fps": self.fps,
            "keys": [list(k) for k in self.keys],
            "pts_first": self.pts_first,
            "pts_step": self.pts_step,
            "pts_table": list(self.pts_table) if self.pts_table is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Probe:
        """Inverse of `to_json`."""
        table = data.get("pts_table")
        return cls(
            kind=str(data["kind"]),
            num_frames=int(data["num_frames"]),
            height=int(data["height"]),
            width=int(data["width"]),
            fps=float(data["fps"]),
            keys=tuple((int(k[0]), k[1], k[2]) for k in data.get("keys", ())),
            pts_first=data.get("pts_first"),
            pts_step=data.get("pts_step"),
            pts_table=tuple(table) if table is not None else None,
        )


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


def probe(path: str | Path) -> Probe:
    """Probe a video file or a frame folder; raises `ReadError` with the reason if unusable."""
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    return _probe_file(path)


def read_frames(path: str | Path, info: Probe, indices: Sequence[int]) -> np.ndarray:
    """Frames `indices` (ascending) of a probed video as uint8 `[T, H, W, 3]`."""
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices given")
    if any(b <= a for a, b in itertools.pairwise(indices)):
        raise ValueError(f"frame indices must be strictly increasing, got {indices}")
    if indices[0] < 0 or indices[-1] >= info.num_frames:
        raise ValueError(
            f"frames {indices[0]}..{indices[-1]} are outside the video's {info.num_frames} frames"
        )
    if info.kind == "frames":
        return _read_folder(Path(path), indices)
    try:
        frames = _decode_indices(path, info, indices, use_index=True)
    except _Fallback:
        frames = _decode_indices(path, info, indices, use_index=False)
    return np.stack(frames)


def decode_all(path: str | Path) -> np.ndarray:
    """Every frame of a video file as uint8 `[T, H, W, 3]` (what the official loader does)."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                frames.append(_to_rgb(frame))
    except (av.FFmpegError, OSError, IndexError) as e:
        if not frames:  # like torchvision.io.read_video, keep what decoded before an error
            raise ReadError(_reason(e)) from None
    if not frames:
        raise ReadError("no video frames")
    return np.stack(frames)


# --- video files ------------------------------------------------------------------------


def _probe_file(path: Path) -> Probe:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ReadError(f"cannot read the file ({e.strerror or e})") from None
    if size == 0:
        raise ReadError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError) as e:
        raise ReadError(f"not a readable video ({_reason(e)})") from None
    with container:
        if not container.streams.video:
            raise ReadError("no video stream in the file")
        stream = container.streams.video[0]
        declared = stream.frames or 0
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
        counting = bool(_COUNTING_FORMATS & set(container.format.name.split(",")))
        pts: list[int | None] = []
        keys: list[tuple[int, int | None, int | None]] = []
        damaged = False
        first = None  # the first decoded frame: proves the codec works and gives the size
        decode_errors: list[Exception] = []
        try:
            for packet in container.demux(stream):
                if first is None and len(decode_errors) < 8:  # a few bad packets may lead
                    try:
                        first = next(iter(packet.decode()), None)
                    except (av.FFmpegError, ValueError) as e:
                        decode_errors.append(e)
                if packet.size == 0:
                    continue
                if packet.is_keyframe:
                    keys.append((len(pts), packet.pts, packet.dts))
                pts.append(packet.pts)
        except (av.FFmpegError, OSError):
            damaged = True  # truncated or corrupt: keep what demuxed, verified below
        if not pts:
            raise ReadError("no video frames in the file")
        if first is None:
            reason = f" ({_reason(decode_errors[-1])})" if decode_errors else ""
            raise ReadError(f"cannot decode the first frame{reason}")
        if first.format.name not in _RGB_READY:
            try:
                _to_rgb(first)
            except (av.FFmpegError, ValueError) as e:
                raise ReadError(f"cannot convert {first.format.name} frames to RGB ({e})") from None
        height, width = first.height, first.width
    info = _replace(_index(pts, keys, counting, fps), height=height, width=width)
    if damaged or declared > info.num_frames:
        # The file ends early (truncated download or copy); keep the frames that decode.
        info = _replace(info, num_frames=_count_decodable(path, info))
    return info


def _index(
    pts: list[int | None],
    keys: list[tuple[int, int | None, int | None]],
    counting: bool,
    fps: float,
) -> Probe:
    n = len(pts)
    pts_first = pts_step = None
    table = None
    usable = not counting and None not in pts and len(set(pts)) == n
    if usable:
        order = sorted(pts)  # type: ignore[type-var]
        steps = {b - a for a, b in itertools.pairwise(order)}
        if len(steps) <= 1:
            pts_first, pts_step = order[0], (steps.pop() if steps else 1)
        else:
            table = tuple(order)
        probe_ = Probe("video", n, 0, 0, fps, (), pts_first, pts_step, table)
        frame_keys = []
        for _, kpts, kdts in keys:
            index = probe_.index_of_pts(kpts)
            if index is not None:
                frame_keys.append((index, kpts, kdts))
        frame_keys.sort(key=lambda k: k[0])
        return _replace(probe_, keys=tuple(frame_keys))
    # Counting from a keyframe is exact only without B-frame reordering; with it (xvid's
    # packed B-frames in UCF-101), reads decode from the start instead of seeking.
    reordered = None in pts or any(b <= a for a, b in itertools.pairwise(pts))  # type: ignore[operator]
    if reordered:
        keys = keys[:1]
    keys = [k for k in keys if k[1] is not None or k[2] is not None]
    return Probe("video", n, 0, 0, fps, tuple(keys))


def _replace(info: Probe, **changes: Any) -> Probe:
    data = {**info.__dict__, **changes}
    return Probe(**data)


def _count_decodable(path: Path, info: Probe) -> int:
    """Frames that decode without error (the file may end mid-frame)."""
    last_key = info.key_for(info.num_frames - 1)
    start = last_key[0] if last_key is not None else 0
    for use_index in (True, False):
        good = -1
        try:
            with av.open(str(path), metadata_errors="ignore") as container:
                stream = container.streams.video[0]
                for index, _ in _frames_from(container, stream, info, start, use_index):
                    good = max(good, index)
        except _Fallback:
            continue
        except (av.FFmpegError, OSError):
            pass
        if good >= 0:
            return min(good + 1, info.num_frames)
        if not use_index:
            break
    raise ReadError("truncated or corrupt: no frame decodes")


def _decode_indices(
    path: str | Path, info: Probe, indices: list[int], *, use_index: bool
) -> list[np.ndarray]:
    wanted = set(indices)
    found: dict[int, np.ndarray] = {}
    last = indices[-1]
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            for index, frame in _frames_from(container, stream, info, indices[0], use_index):
                if index in wanted:
                    found[index] = _to_rgb(frame)
                    if len(found) == len(wanted):
                        break
                elif index > last:
                    break
    except (av.FFmpegError, OSError, ValueError) as e:
        if use_index:
            raise _Fallback from None
        raise ReadError(f"decoding failed ({_reason(e)})") from None
    if len(found) < len(wanted):
        if use_index:
            raise _Fallback
        missing = min(wanted - found.keys())
        raise ReadError(f"frame {missing} does not decode (the video has fewer frames)")
    return [found[i] for i in indices]


def _frames_from(
    container: Any, stream: Any, info: Probe, first: int, use_index: bool
) -> Iterator[tuple[int, Any]]:
    """Decoded frames with their indices, starting at or before frame `first`."""
    key = info.key_for(first) if use_index else None
    seeked = key is not None and key[0] > 0
    if seeked:
        _, kpts, kdts = key
        # Demuxers index keyframes by pts or by dts (<= pts); seeking to the pts lands on this
        # keyframe either way (the next one's dts is a whole GOP later).
        target = kpts if kpts is not None else kdts
        container.seek(target, stream=stream, backward=True, any_frame=False)
    by_pts = use_index and info.has_pts
    next_index = key[0] if seeked else 0
    landed = not (seeked and not by_pts)
    previous = -1
    for packet in container.demux(stream):
        if not landed and packet.size > 0:
            # Counting mode: frames are numbered from the keyframe the seek landed on.
            if (packet.pts, packet.dts) != (key[1], key[2]):
                raise _Fallback
            landed = True
        for frame in packet.decode():
            if by_pts:
                index = info.index_of_pts(frame.pts)
                # Unknown pts, a seek past `first`, or pts out of order: the index is wrong.
                if index is None or index <= previous or (previous < 0 and index > first):
                    raise _Fallback
            else:
                index = next_index
                next_index += 1
            previous = index
            yield index, frame


def _to_rgb(frame: Any) -> np.ndarray:
    # rgb24 turns gray into three equal channels and drops alpha (gif, png-in-mov, yuva).
    return frame.to_ndarray(format="rgb24")


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(text))
    return text.split(": '")[0].strip().rstrip(".")


# --- frame folders ----------------------------------------------------------------------


def _probe_folder(folder: Path) -> Probe:
    try:
        names = list_frames(folder)
    except OSError as e:
        raise ReadError(f"cannot list the folder ({e.strerror or e})") from None
    if not names:
        raise ReadError("no image frames (.jpg, .png, .webp, .bmp) in the folder")
    first = load_image(folder / names[0])
    return Probe("frames", len(names), first.shape[0], first.shape[1], 0.0)


def _read_folder(folder: Path, indices: list[int]) -> np.ndarray:
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
        raise ReadError(f"cannot read frame {Path(path).name} ({_reason(e)})") from None
