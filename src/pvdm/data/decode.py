"""Decoding video files with PyAV, reading only the frames a clip needs.

The official PVDM loader (`tools/dataloader.py`; reference §6.1) decodes every video whole
with `torchvision.io.read_video` and then keeps 16 or 32 frames. Here a clip is read by seeking
to the last keyframe at or before its first frame and decoding forward to its last frame.
(Frame folders are read in `frames.py`; `probe` and `read_frames` accept both.)

Frame index `i` always means the i-th frame that a full decode from the start outputs, so a
clip read by seeking equals the same frames of a full decode. Two ways map decoded frames to
indices:
- *pts mode* (mp4, mov, mkv, webm, gif, ...): the presentation timestamps of the video
  packets, sorted, are the frame order; a decoded frame's pts gives its index.
- *counting mode* (avi, whose demuxer makes up timestamps, and files without usable pts):
  after seeking, the first packet must be the keyframe we expect, and the frames that follow
  are counted from its position. AVIs with reordered (B-)frames, such as UCF-101's xvid files
  with packed B-frames, are decoded from the start up to the clip's last frame instead: their
  keyframe positions do not give display positions.
Whenever a seek lands somewhere unexpected, the read starts over from the beginning of the
file without seeking, which is always right, only slower.

Note: torchvision's `read_video` (the official loader) sorts frames by pts, which for packed
B-frame AVIs swaps neighbouring frames; we keep the decoder's output (display) order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from pvdm.data.frames import IMAGE_SUFFIXES, list_frames, load_image, probe_folder, read_folder
from pvdm.data.meta import Probe, ReadError, reason_of

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Probe",
    "ReadError",
    "decode_all",
    "list_frames",
    "load_image",
    "probe",
    "read_frames",
]

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov", ".gif", ".mpg", ".mpeg", ".wmv", ".flv"}
    | {".ogv", ".3gp", ".ts"}
)

# Containers whose demuxer invents timestamps from the packet count (packed B-frames in AVI
# give decoded frames out-of-order pts), so frames are identified by counting instead.
_COUNTING_FORMATS = frozenset({"avi"})


# Pixel formats known to convert to rgb24; others are test-converted once while scanning.
_RGB_READY = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}
    | {"rgb24", "bgr24", "rgba", "bgra", "argb", "abgr", "pal8", "yuva420p"}
)


# Frames larger than this are refused (a crafted file can declare any size, and even one
# decoded frame of 2**28 pixels needs gigabytes); 8K video (7680x4320) is well inside. Every
# decoded frame is checked, not only the first that probing sees: a stream may change its size
# part-way (16x16 first, 16384x8192 after).
MAX_FRAME_PIXELS = 2**26
MAX_FRAME_SIDE = 16384


class _Fallback(Exception):
    """A seek landed somewhere the index did not predict; decode from the start instead."""


def probe(path: str | Path) -> Probe:
    """Probe a video file or a frame folder; raises `ReadError` with the reason if unusable."""
    path = Path(path)
    if path.is_dir():
        return probe_folder(path)
    return _probe_file(path)


def read_frames(
    path: str | Path, info: Probe, indices: Sequence[int], resolution: int | None = None
) -> np.ndarray:
    """Frames `indices` (ascending) of a probed video as uint8 `[T, H, W, 3]`.

    With `resolution`, each frame is centre-cropped and resized to `resolution` squared as soon
    as it is decoded (exactly `center_crop_resize`), so memory follows the output size, not the
    file's: `[T, resolution, resolution, 3]`.
    """
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
        frames = read_folder(Path(path), indices)
        return frames if resolution is None else np.stack([_fit(f, resolution) for f in frames])
    try:
        frames = _decode_indices(path, info, indices, use_index=True, resolution=resolution)
    except _Fallback:
        frames = _decode_indices(path, info, indices, use_index=False, resolution=resolution)
    return np.stack(frames)


def _fit(frame: np.ndarray, resolution: int) -> np.ndarray:
    """One uint8 `[H, W, 3]` frame centre-cropped and resized to `[resolution, resolution, 3]`."""
    from pvdm.data.transform import center_crop_resize

    return center_crop_resize(frame[None], resolution)[:, 0].permute(1, 2, 0).numpy()


def decode_all(path: str | Path) -> np.ndarray:
    """Every frame of a video file as uint8 `[T, H, W, 3]` (what the official loader does)."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                check_frame_size(frame)
                frames.append(_to_rgb(frame))
    except (av.FFmpegError, OSError, IndexError) as e:
        if not frames:  # like torchvision.io.read_video, keep what decoded before an error
            raise ReadError(reason_of(e)) from None
    if not frames:
        raise ReadError("no video frames")
    return np.stack(frames)


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
        raise ReadError(f"not a readable video ({reason_of(e)})") from None
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
            reason = f" ({reason_of(decode_errors[-1])})" if decode_errors else ""
            raise ReadError(f"cannot decode the first frame{reason}")
        if first.format.name not in _RGB_READY:
            try:
                _to_rgb(first)
            except (av.FFmpegError, ValueError) as e:
                raise ReadError(f"cannot convert {first.format.name} frames to RGB ({e})") from None
        height, width = first.height, first.width
        check_frame_size(first)
    info = _replace(_index(pts, keys, counting, fps), height=height, width=width)
    if damaged or declared > info.num_frames:
        # The file ends early (truncated download or copy); keep the frames that decode.
        info = _replace(info, num_frames=_count_decodable(path, info))
    return info


def check_frame_size(frame: Any) -> None:
    """Refuse a decoded frame larger than `MAX_FRAME_PIXELS` or `MAX_FRAME_SIDE` (ReadError)."""
    width, height = frame.width, frame.height
    if height * width > MAX_FRAME_PIXELS or max(height, width) > MAX_FRAME_SIDE:
        raise ReadError(
            f"frames of {width}x{height} are too large (at most {MAX_FRAME_PIXELS} pixels and "
            f"{MAX_FRAME_SIDE} per side); scale the video down first, e.g. with ffmpeg -vf scale"
        )


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
    path: str | Path, info: Probe, indices: list[int], *, use_index: bool, resolution: int | None
) -> list[np.ndarray]:
    wanted = set(indices)
    found: dict[int, np.ndarray] = {}
    last = indices[-1]
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            for index, frame in _frames_from(container, stream, info, indices[0], use_index):
                if index in wanted:
                    rgb = _to_rgb(frame)
                    found[index] = rgb if resolution is None else _fit(rgb, resolution)
                    if len(found) == len(wanted):
                        break
                elif index > last:
                    break
    except (av.FFmpegError, OSError, ValueError) as e:
        if use_index:
            raise _Fallback from None
        raise ReadError(f"decoding failed ({reason_of(e)})") from None
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
            check_frame_size(frame)  # before any conversion or copy of it
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
