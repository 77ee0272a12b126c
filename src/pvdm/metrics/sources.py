"""Where evaluation clips come from: real dataset clips, a folder of videos, or a generator.

StyleGAN-V's protocol (`src/metrics/metric_utils.py`), which PVDM's numbers follow:
- real clips: one clip per video of the split, at a seeded random offset; videos shorter than
  the clip are skipped; a seeded subset of `num_real` videos when the split has more;
- fake clips: the first frames of each video (offset 0), generated with seeds base + i.

Every source yields `(videos, index)` batches for this rank's share of the samples: uint8
videos [B, C, T, H, W] at the protocol's resolution and sample indices [B]. Sample i belongs to
rank i % world_size, so the samples, and thus the metric, do not depend on the process count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset

from pvdm.data import (
    DataConfig,
    build_dataset,
    center_crop_resize,
    collate,
    eval_requests,
    read_video,
)
from pvdm.data.dataset import warn_no_test_split
from pvdm.data.digest import video_digests
from pvdm.errors import DataError
from pvdm.metrics.protocols import Protocol

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # uint8 videos [B, C, T, H, W], sample indices [B]

# Codecs that decode bit-exactly; anything else in a video file (H.264, VP9, GIF's palette, ...)
# changes the pixels, and FVD with them (H.264 smooths away artifacts the detector penalises).
LOSSLESS_CODECS = frozenset({"ffv1", "huffyuv", "ffvhuff", "png", "rawvideo", "utvideo", "qtrle"})
LOSSY_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".webp"})


def shard(num: int, rank: int, world_size: int) -> list[int]:
    """The sample indices of `rank`: i with i % world_size == rank."""
    return list(range(rank, num, world_size))


def span_of(protocol: Protocol) -> int:
    """Source frames one clip covers: `(frames - 1) * stride + 1`."""
    return (protocol.frames - 1) * protocol.stride + 1


def resize_videos(videos: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [B, C, T, H, W] -> [B, C, T, res, res], centre-cropped like the real clips."""
    if videos.shape[-2:] == (resolution, resolution):
        return videos
    out = [center_crop_resize(rearrange(v, "c t h w -> t h w c"), resolution) for v in videos]
    return torch.stack(out)


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # N decoding workers use N cores, not N times all of them


def _loader(
    dataset: Dataset, items: Sequence[Any], batch_size: int, num_workers: int, collate_fn=None
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=list(items),  # in this order: batch k holds items[k * batch_size:]
        num_workers=num_workers,
        collate_fn=collate_fn,
        worker_init_fn=_one_thread if num_workers else None,
    )


# --- real clips -----------------------------------------------------------------------------


@dataclass
class RealClips:
    """The real clips of a protocol: one per video at a seeded offset, at most `num_real`."""

    dataset: Any  # pvdm.data.VideoDataset
    requests: list  # pvdm.data.ClipRequest, in sample order
    identity: str  # what the reference-statistics cache key says about the data
    split: str  # the split read: "train" where a held-out ("test") split was asked of unsplit data

    @classmethod
    def open(cls, data: DataConfig, protocol: Protocol) -> RealClips:
        """Open the protocol's split of `data` at the protocol's clip shape and resolution."""
        if protocol.resolution is None:
            raise ValueError("resolve the protocol's resolution before drawing real clips")
        cfg = dataclasses.replace(
            data,
            split=protocol.real_split,
            resolution=protocol.resolution,
            frames=protocol.frames,
            stride=protocol.stride,
        )
        dataset = build_dataset(cfg)  # silent: skipping short videos is the protocol's rule
        if cfg.split == "test" and dataset.unsplit:
            warn_no_test_split(protocol.name, data.path, "the folder has no train/test sub-folders")
            cfg = dataclasses.replace(cfg, split="train")  # recorded, and keyed in the cache
        kinds = Counter(reason.split(" (")[0] for _, reason in dataset.skipped)
        why = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        if len(dataset) == 0:
            raise DataError(
                f"no video of {data.path} ({cfg.split}) gives a {protocol.name} clip of "
                f"{span_of(protocol)} frames ({why or 'no videos found'}); see "
                f"`pvdm data inspect {data.path}`"
            )
        if dataset.skipped:
            total = len(dataset.skipped) + len(dataset)
            log.info(
                "%s: %d of %d videos of %s skipped (%s)",
                protocol.name,
                len(dataset.skipped),
                total,
                cfg.split,
                why,
            )
        requests = eval_requests(dataset, protocol.num_real, seed=protocol.seed)
        return cls(dataset, requests, dataset_identity(cfg, dataset), cfg.split)

    def __len__(self) -> int:
        return len(self.requests)

    def batches(
        self, batch_size: int, *, rank: int = 0, world_size: int = 1, num_workers: int = 0
    ) -> Iterator[Batch]:
        """This rank's clips in batches, with their sample indices."""
        mine = shard(len(self.requests), rank, world_size)
        if not mine:
            return
        requests = [self.requests[i] for i in mine]
        loader = _loader(self.dataset, requests, batch_size, num_workers, collate)
        for k, batch in enumerate(loader):
            yield batch["video"], torch.tensor(mine[k * batch_size : (k + 1) * batch_size])


def dataset_identity(cfg: DataConfig, dataset: Any) -> str:
    """Layout, root, split, fold and a digest of the usable videos (paths, frame counts and
    the SHA-256 of their bytes, `pvdm.data.digest`).

    Adding, removing, re-encoding or repainting videos (frames re-extracted at another size or
    quality under the same names) changes it, so cached statistics of an older copy of the
    data are not reused.
    """
    if dataset.layout == "synthetic":
        listing = "\n".join(f"{v.path}|{v.num_frames}" for v in dataset.videos)
        listing += f"\nseed={cfg.synthetic_seed}"
        root = "synthetic"
    else:
        contents = video_digests([v.path for v in dataset.videos])
        listing = "\n".join(
            f"{v.path}|{v.num_frames}|{digest}" for v, digest in zip(dataset.videos, contents)
        )
        root = str(Path(cfg.path).expanduser().resolve())
    digest = hashlib.sha256(listing.encode("utf-8")).hexdigest()[:16]
    return f"{dataset.layout}:{root}:{cfg.split}:fold{cfg.fold}:{len(dataset)}:{digest}"


# --- a folder of videos ---------------------------------------------------------------------


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """The videos in `folder`: video files and frame folders, found as the data layer finds a
    folder dataset (`pvdm.data.layouts`, recursive, natural order).

    Images directly in `folder` (`pvdm sample`'s `grid.png`) are not a video. Links to one file
    count once, and links to folders outside `folder` are not followed. Two files of one
    name in different formats (`sample-0000.mp4` and `sample-0000.gif`, as older `pvdm sample`
    wrote) are refused: each would count as a sample and bias the metric; so are empty files
    (a write that failed), which hold no video at all.
    """
    from pvdm.data.layouts import discover

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--fake {folder} is not a folder; give a folder of videos")
    root = folder.expanduser().absolute()
    found = discover(root, "folder", "all", 1, links_out=False)
    videos = [p for p, _ in found.items if p != root]
    empty = [p.name for p in videos if p.is_file() and p.stat().st_size == 0]
    if empty:
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise DataError(
            f"--fake {folder} holds {len(empty)} empty file(s) (0 bytes: {shown}), videos whose "
            "writing failed; delete them or write the samples again"
        )
    stems: dict[Path, Path] = {}
    for path in videos:
        stem = path.with_suffix("") if path.is_file() else path
        if stem in stems:
            raise DataError(
                f"--fake {folder} holds {stems[stem].name} and {path.name}, the same video in "
                "two formats: keep one of them (pvdm sample now writes one file per video)"
            )
        stems[stem] = path
    return videos


def lossy_reason(videos: Sequence[Path]) -> str | None:
    """Why decoding these videos does not give back the generated pixels, or None if it does.

    Frame folders are judged by their images' suffix, files by their codec (one probe per
    suffix).
    """
    import av

    reasons: Counter[str] = Counter()
    codec_of: dict[str, str] = {}
    for path in videos:
        if path.is_dir():
            first = next((n for n in sorted(os.listdir(path)) if not n.startswith(".")), "")
            suffix = os.path.splitext(first)[1].lower()
            if suffix in LOSSY_IMAGE_SUFFIXES:
                reasons[f"{suffix[1:].upper()} frames"] += 1
            continue
        suffix = path.suffix.lower()
        if suffix not in codec_of:
            try:
                with av.open(str(path)) as container:
                    codec_of[suffix] = container.streams.video[0].codec_context.name
            except (av.FFmpegError, OSError, IndexError):
                codec_of[suffix] = "unreadable"
        if codec_of[suffix] not in LOSSLESS_CODECS:
            reasons[f"{codec_of[suffix]} {suffix}"] += 1
    if not reasons:
        return None
    parts = ", ".join(f"{n} {kind}" for kind, n in reasons.most_common())
    return f"{parts} (lossy)"


class _FolderDataset(Dataset):
    def __init__(self, paths: list[Path], frames: int, stride: int, resolution: int) -> None:
        self.paths, self.frames, self.stride, self.resolution = paths, frames, stride, resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        # each frame is cropped and resized as it decodes (the same centre crop + bilinear
        # resize per frame, so the same pixels): memory follows the protocol's resolution
        return read_video(
            self.paths[i],
            start=0,
            num_frames=self.frames,
            stride=self.stride,
            resolution=self.resolution,
        )


@dataclass
class FolderVideos:
    """Fake videos read from a folder (e.g. one written by `pvdm sample`)."""

    path: Path
    videos: list[Path]
    model: str | None = None  # the model that made them, when the user says so (recorded)
    model_sha256: dict[str, str] | None = None
    lossy: str | None = None  # why the files do not hold the generated pixels exactly

    @classmethod
    def open(cls, path: str | os.PathLike, **record: Any) -> FolderVideos:
        """List the videos of a folder; no video at all is a `DataError`. Lossy files warn."""
        videos = list_videos(path)
        if not videos:
            raise DataError(
                f"no videos in --fake {path}: expected video files (mp4, gif, ...) or folders "
                "of frames"
            )
        fake = cls(Path(path), videos, **record)
        fake.lossy = lossy_reason(videos)
        if fake.lossy:
            log.warning("%s", fake.lossy_warning())
        return fake

    def lossy_warning(self) -> str:
        """One sentence on why a lossy folder biases FVD and what to do instead."""
        return (
            f"--fake {self.path} holds {self.lossy}: lossy encoding changes FVD (H.264 smoothed "
            "a 7171 FVD to 4599 in docs/evaluation.md); write samples with `pvdm sample --format "
            "png` (or mkv), or evaluate the model directly with --model"
        )

    def native_resolution(self) -> int:
        """The shorter side of the first video's frames."""
        first = read_video(self.videos[0], num_frames=1)
        return min(first.shape[-2:])

    def describe(self, protocol: Protocol) -> dict[str, Any]:
        """What the result record says about the fake videos."""
        return {
            "source": "folder",
            "path": str(self.path),
            "videos_in_folder": len(self.videos),
            "videos_used": f"the first {protocol.num_fake}, frames from 0",
            "lossy": self.lossy,
            "model": self.model,
            "model_sha256": self.model_sha256,
        }

    def check_count(self, protocol: Protocol) -> None:
        """Refuse a protocol that needs more videos than the folder holds."""
        if len(self.videos) < protocol.num_fake:
            n = len(self.videos)
            raise DataError(
                f"--fake {self.path} holds {n} videos but {protocol.name} needs "
                f"{protocol.num_fake}; add videos, or pass --num {n} for a quick check "
                "(its result is then named after that count)"
            )

    def batches(
        self,
        protocol: Protocol,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> Iterator[Batch]:
        """This rank's share of the first `num_fake` videos, clipped from frame 0."""
        self.check_count(protocol)
        mine = shard(protocol.num_fake, rank, world_size)
        if not mine:
            return
        dataset = _FolderDataset(self.videos, protocol.frames, protocol.stride, protocol.resolution)
        for k, videos in enumerate(_loader(dataset, mine, batch_size, num_workers)):
            yield videos, torch.tensor(mine[k * batch_size : (k + 1) * batch_size])


# --- generated videos -----------------------------------------------------------------------


def reported_sampling():
    """The sampling PVDM's FVDs are reported with: the official DDIM, 400 steps, eta 1."""
    from pvdm.diffusion.sampling import SamplingConfig

    return SamplingConfig(sampler="ddim", steps=400, eta=1.0)


@dataclass
class GeneratedVideos:
    """Fake videos made by a `PVDMPipeline`: sample i from seed `seed + i`.

    `seed=None` uses the protocol's seed. `request` (a `SamplingConfig`; its seed is not used)
    defaults to `reported_sampling()`, on the EMA weights that snapshots hold, with the steps
    capped at the model's schedule; it is checked against the model here, before any work.
    """

    pipe: Any  # pvdm.diffusion.pipeline.PVDMPipeline
    model: str
    request: Any = None  # pvdm.diffusion.SamplingConfig
    seed: int | None = None
    model_sha256: dict[str, str] | None = None

    def __post_init__(self) -> None:
        num_timesteps = int(self.pipe.schedule.num_timesteps)
        if self.request is None:
            reported = reported_sampling()
            self.request = reported.replace(steps=min(reported.steps, num_timesteps))
        self.request = self.pipe.resolve(self.request)

    def native_resolution(self) -> int:
        """The resolution the pipeline generates at."""
        return int(self.pipe.autoencoder.config.resolution)

    def seed_base(self, protocol: Protocol) -> int:
        """The seed of sample 0."""
        return protocol.seed if self.seed is None else self.seed

    def describe(self, protocol: Protocol) -> dict[str, Any]:
        """What the result record says about the fake videos (sampling settings included)."""
        base = self.seed_base(protocol)
        sampling = self.request.record()
        return {
            "source": "model",
            "model": self.model,
            "model_sha256": self.model_sha256,
            **{k: sampling[k] for k in ("sampler", "steps", "eta", "guidance")},
            "seeds": [base, base + protocol.num_fake - 1],  # first and last
        }

    def check_count(self, protocol: Protocol) -> None:
        """Any count can be generated."""

    def batches(
        self,
        protocol: Protocol,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> Iterator[Batch]:
        """This rank's generated videos, `frames` every `stride`-th from frame 0."""
        mine = shard(protocol.num_fake, rank, world_size)
        base = self.seed_base(protocol)
        for k in range(0, len(mine), batch_size):
            chunk = mine[k : k + batch_size]
            videos = self.pipe(
                self.request,
                frames=span_of(protocol),
                seeds=[base + i for i in chunk],
                batch_size=batch_size,
                progress=False,
            )
            videos = resize_videos(videos[:, :, :: protocol.stride].cpu(), protocol.resolution)
            yield videos, torch.tensor(chunk)
