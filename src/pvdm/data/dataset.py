"""Video datasets returning uint8 clips `[C, T, H, W]` with their class label.

Official `VideoFolderDataset` / `ImageFolderDataset` (reference §6): a clip is `n` consecutive
frames from a uniformly random start, centre-cropped and resized. Differences, all on purpose:
frames are read by seeking instead of decoding whole videos; the start comes from a seed in
the request (so a resumed run sees the same clips) instead of the global numpy RNG; videos
shorter than a clip are skipped instead of raising inside a worker (UCF-101 has clips under
32 frames; reference §7), and a video that fails to read is replaced by another one.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from pvdm.data.config import DataConfig
from pvdm.data.decode import Probe, ReadError, probe, read_frames
from pvdm.data.layouts import discover
from pvdm.data.scan import VideoInfo, scan
from pvdm.data.synthetic import SyntheticVideos
from pvdm.data.transform import center_crop_resize
from pvdm.errors import DataError

log = logging.getLogger(__name__)

# Distinct tags keep the random streams of start offsets and substitutions apart.
_START_TAG = 0x5174
_SUBSTITUTE_TAG = 0x5B57


@dataclass(frozen=True)
class ClipRequest:
    """Ask a dataset for a clip of video `index` at a random start drawn from `seed`."""

    index: int
    seed: int


class VideoDataset(Dataset):
    """Clips of `clip_frames` frames (every `stride`-th) at `resolution`, uint8 `[C, T, H, W]`."""

    def __init__(
        self,
        videos: list[VideoInfo],
        *,
        resolution: int,
        clip_frames: int,
        stride: int = 1,
        layout: str = "folder",
        classes: list[str] | None = None,
        skipped: list[tuple[str, str]] | None = None,
        probes: list[Probe] | None = None,
        synthetic: SyntheticVideos | None = None,
        unsplit: bool = False,
        split: str = "train",
    ) -> None:
        if (probes is None) == (synthetic is None):
            raise ValueError("give exactly one of probes (files) or synthetic")
        if probes is not None and len(probes) != len(videos):
            raise ValueError("need one probe per video")
        self.videos = videos
        self.resolution = resolution
        self.clip_frames = clip_frames
        self.stride = stride
        self.layout = layout
        self.classes = classes
        self.unsplit = unsplit  # the data has no train/test split: any split is every video
        # the split read: "train" for held-out clips of unsplit data (see open_heldout)
        self.split = "train" if unsplit else split
        self.skipped = list(skipped or [])
        self.num_read_failures = 0
        self._probes = probes
        self._synthetic = synthetic
        self._bad: set[int] = set()

    @property
    def span(self) -> int:
        """Frames of the source video one clip covers: `(clip_frames - 1) * stride + 1`."""
        return (self.clip_frames - 1) * self.stride + 1

    def __len__(self) -> int:
        return len(self.videos)

    def clip(self, index: int, start: int) -> torch.Tensor:
        """The clip of video `index` starting at frame `start`, uint8 `[C, T, H, W]`."""
        try:
            return self._clip(index, start)
        except ReadError as e:
            raise DataError(f"cannot read {self.videos[index].path}: {e}") from None

    def start_for(self, index: int, seed: int) -> int:
        """The random start frame a `ClipRequest(index, seed)` reads."""
        last = self.videos[index].num_frames - self.span
        return int(np.random.default_rng([_START_TAG, seed, index]).integers(0, last + 1))

    def __getitem__(self, item: int | ClipRequest) -> dict[str, Any]:
        """`{"video", "label", "index", "start", "failed"}` for an index (start 0) or request."""
        if isinstance(item, ClipRequest):
            index, seed, random_start = int(item.index), int(item.seed), True
        else:
            index, seed, random_start = int(item), 0, False
        if not 0 <= index < len(self.videos):
            raise IndexError(f"video index {index} out of range for {len(self.videos)} videos")
        failed = 0
        current = index
        while True:
            if current not in self._bad:
                start = self.start_for(current, seed) if random_start else 0
                try:
                    video = self._clip(current, start)
                    break
                except ReadError as e:
                    self._bad.add(current)
                    self.num_read_failures += 1
                    log.warning(
                        "skipping %s from now on: %s (reading another video instead)",
                        self.videos[current].path,
                        e,
                    )
            failed += 1
            current = self._substitute(index, seed, failed)
        return {
            "video": video,
            "label": self.videos[current].label,
            "index": current,
            "start": start,
            "failed": failed,
        }

    def _clip(self, index: int, start: int) -> torch.Tensor:
        info = self.videos[index]
        if not 0 <= start <= info.num_frames - self.span:
            raise ValueError(
                f"start {start} out of range: video {index} has {info.num_frames} frames and a "
                f"clip spans {self.span}"
            )
        indices = list(range(start, start + self.span, self.stride))
        if self._synthetic is not None:
            frames = self._synthetic.frames(index, indices)
        else:
            # crop and resize each frame as it decodes: memory follows the resolution
            frames = read_frames(info.path, self._probes[index], indices, self.resolution)
        return center_crop_resize(frames, self.resolution)

    def _substitute(self, index: int, seed: int, attempt: int) -> int:
        if attempt > max(32, 2 * len(self.videos)) or len(self._bad) >= len(self.videos):
            raise DataError(
                f"no readable video left after {attempt} failed reads; check the dataset with "
                "`pvdm data inspect`"
            )
        # The candidates depend only on (seed, index, attempt), never on which files this
        # process already knows are bad, so every worker substitutes the same video.
        if len(self.videos) == 1:
            return index
        rng = np.random.default_rng([_SUBSTITUTE_TAG, seed, index, attempt])
        return (index + 1 + int(rng.integers(len(self.videos) - 1))) % len(self.videos)

    def __repr__(self) -> str:
        return (
            f"VideoDataset(layout={self.layout!r}, videos={len(self)}, "
            f"classes={len(self.classes) if self.classes else 0}, clip_frames={self.clip_frames}, "
            f"stride={self.stride}, resolution={self.resolution}, skipped={len(self.skipped)})"
        )


# (path, reason) pairs already warned about: a command that opens the same videos twice (the
# training split and the held-out split, a split and its fallback) warns once per video.
_WARNED: set[tuple[str, str]] = set()


def open_dataset(
    cfg: DataConfig, *, clip_frames: int | None = None, split: str | None = None
) -> VideoDataset:
    """The dataset `cfg` describes, clips of `clip_frames` (default `cfg.frames`) frames.

    Unusable videos are skipped with one warning each (once per process); no usable video is a
    `DataError`.
    """
    dataset = build_dataset(cfg, clip_frames=clip_frames, split=split)
    fresh = [(p, r) for p, r in dataset.skipped if (str(p), r) not in _WARNED]
    for path, reason in fresh:
        log.warning("skipping %s: %s", path, reason)
        _WARNED.add((str(path), reason))
    if fresh:
        log.warning(
            "%d of %d videos skipped, %d usable",
            len(dataset.skipped),
            len(dataset.skipped) + len(dataset),
            len(dataset),
        )
    if len(dataset) == 0:
        raise DataError(no_video_message(cfg.path, dataset))
    return dataset


def open_heldout(cfg: DataConfig, *, purpose: str, clip_frames: int | None = None) -> VideoDataset:
    """The test split of `cfg`, for `purpose` (e.g. "the held-out PSNR guard").

    Data without a usable test split (a folder without train/test sub-folders, a dataset
    without its test list or folder) gives its training videos instead, with a warning that
    names the purpose: nothing falls back to training clips silently.
    """
    try:
        held = open_dataset(cfg, clip_frames=clip_frames, split="test")
    except DataError as e:
        reason = str(e)
    else:
        if not held.unsplit:
            return held
        reason = "the folder has no train/test sub-folders"
    warn_no_test_split(purpose, cfg.path, reason)
    return open_dataset(cfg, clip_frames=clip_frames, split="train")


def warn_no_test_split(purpose: str, path: str, reason: str) -> None:
    """The one warning for held-out clips taken from training videos (data without a test
    split): nothing falls back to training clips silently."""
    log.warning(
        "%s uses TRAINING videos of %s: it has no test split (%s); give data with a test split "
        "for a held-out measure",
        purpose,
        path,
        reason,
    )


def no_video_message(path: str, dataset: VideoDataset) -> str:
    """One sentence for a dataset without a usable video, naming the commonest reasons."""
    if not dataset.skipped:
        return f"no videos found in {path}; expected video files or folders of frames"
    reasons = Counter(_reason_kind(reason) for _, reason in dataset.skipped)
    common = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
    return (
        f"no usable video in {path} ({len(dataset.skipped)} skipped: {common}); "
        f"see `pvdm data inspect {path}`"
    )


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0]


def build_dataset(
    cfg: DataConfig, *, clip_frames: int | None = None, split: str | None = None
) -> VideoDataset:
    """Like `open_dataset` but silent and possibly empty (for `pvdm data inspect`)."""
    cfg.validate()
    clip_frames = cfg.frames if clip_frames is None else clip_frames
    if clip_frames < 1:
        raise DataError(f"clip length must be positive, got {clip_frames}")
    split = cfg.split if split is None else split
    span = (clip_frames - 1) * cfg.stride + 1
    # "synthetic" names the built-in videos unless a file layout is forced (then ./synthetic).
    if cfg.layout == "synthetic" or (cfg.layout == "auto" and cfg.path == "synthetic"):
        return _synthetic(cfg, clip_frames, split, span)
    found = discover(cfg.path, cfg.layout, split, cfg.fold)
    results = scan(found.root, [p for p, _ in found.items], cache=cfg.cache)
    videos, probes = [], []
    skipped = list(found.missing)
    for (path, label), result in zip(found.items, results):
        if isinstance(result, str):
            skipped.append((str(path), result))
        elif result.num_frames < span:
            skipped.append(
                (str(path), f"too short ({result.num_frames} frames, a clip needs {span})")
            )
        else:
            videos.append(
                VideoInfo(
                    str(path), result.num_frames, result.height, result.width, result.fps, label
                )
            )
            probes.append(result)
    return VideoDataset(
        videos,
        resolution=cfg.resolution,
        clip_frames=clip_frames,
        stride=cfg.stride,
        layout=found.layout,
        classes=found.classes,
        skipped=skipped,
        probes=probes,
        unsplit=found.unsplit,
        split=split,
    )


def _synthetic(cfg: DataConfig, clip_frames: int, split: str, span: int) -> VideoDataset:
    if cfg.synthetic_frames < span:
        raise DataError(
            f"synthetic videos have {cfg.synthetic_frames} frames but a clip needs {span}; "
            f"raise data.synthetic_frames to at least {span}"
        )
    source = SyntheticVideos(
        cfg.synthetic_videos,
        cfg.synthetic_frames,
        cfg.resolution,
        seed=cfg.synthetic_seed,
        split=split,
    )
    videos = [
        VideoInfo(
            f"synthetic:{split}/{i:05d}",
            cfg.synthetic_frames,
            cfg.resolution,
            cfg.resolution,
            8.0,
            source.label(i),
        )
        for i in range(cfg.synthetic_videos)
    ]
    return VideoDataset(
        videos,
        resolution=cfg.resolution,
        clip_frames=clip_frames,
        stride=cfg.stride,
        layout="synthetic",
        classes=list(source.classes),
        synthetic=source,
        split=split,
    )


def read_video(
    path: str | Path,
    *,
    start: int = 0,
    num_frames: int | None = None,
    stride: int = 1,
    resolution: int | None = None,
) -> torch.Tensor:
    """A user's video file or frame folder as uint8 `[C, T, H, W]` at its own size, or with
    `resolution` centre-cropped and resized to it frame by frame while decoding."""
    try:
        info = probe(path)
    except ReadError as e:
        raise DataError(f"cannot read video {path}: {e}") from None
    if start < 0 or stride < 1:
        raise DataError(f"start must be >= 0 and stride >= 1, got start={start}, stride={stride}")
    available = len(range(start, info.num_frames, stride))
    count = available if num_frames is None else num_frames
    if count < 1 or count > available:
        raise DataError(
            f"video {path} has {info.num_frames} frames; cannot take {count} frames from "
            f"frame {start} with stride {stride} (at most {available})"
        )
    indices = list(range(start, start + (count - 1) * stride + 1, stride))
    try:
        frames = read_frames(path, info, indices, resolution)
    except ReadError as e:
        raise DataError(f"cannot read video {path}: {e}") from None
    return rearrange(torch.from_numpy(frames), "t h w c -> c t h w").contiguous()
