"""Batches of clips for training and evaluation, with worker processes that decode with PyAV.

Official loader (reference §6.3): `DataLoader(batch_size // n_gpus, num_workers=4,
prefetch_factor=2)` over an infinite sampler. Here the sampler is `ClipSampler` (resumable
from any batch) and each worker opens its own PyAV containers per clip, so nothing decoder-
related crosses a process boundary; workers run torch single-threaded so that N workers use
N cores rather than N times all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pvdm.data.dataset import ClipRequest, VideoDataset
from pvdm.data.sampler import ClipSampler
from pvdm.seeds import mix_seed

_EVAL_TAG = 0xE7A1


class ClipLoader:
    """An endless iterable of batches `{"video": uint8 [B, C, T, H, W], "label": int64 [B], ...}`.

    Also `"index"` (the video read), `"start"` (its first frame) and `"failed"` (videos that
    failed to read before this one replaced them; 0 normally). `num_substituted` counts the
    clips of the batches yielded so far that replaced an unreadable video.
    """

    def __init__(self, dataset: VideoDataset, sampler: ClipSampler, loader: DataLoader) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.num_substituted = 0
        self._loader = loader

    @property
    def batch_size(self) -> int:
        return self.sampler.local_batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self._loader:
            self.num_substituted += int((batch["failed"] > 0).sum())
            yield batch


def make_loader(
    dataset: VideoDataset,
    *,
    batch_size: int,
    seed: int,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    shuffle: bool = True,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
    multiprocessing_context: str | None = None,
) -> ClipLoader:
    """Endless batches of `batch_size` clips for this rank, starting at global batch `start_batch`.

    Batch `b` holds the same clips whatever `num_workers` is and however often the run was
    resumed; a training loop with gradient accumulation uses `b = step * accum + micro`.
    Workers may use any start method (`multiprocessing_context`: fork, spawn, forkserver).
    """
    sampler = ClipSampler(
        len(dataset),
        batch_size * world_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        start_batch=start_batch,
        shuffle=shuffle,
    )
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {
            "prefetch_factor": prefetch_factor,
            "worker_init_fn": _worker_init,
            "multiprocessing_context": multiprocessing_context,
        }
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=True,
        **extra,
    )
    return ClipLoader(dataset, sampler, loader)


def eval_requests(
    dataset: VideoDataset, num: int, *, seed: int, per_video: int = 1
) -> list[ClipRequest]:
    """One request per video at a seeded random start, for `min(num, len(dataset))` videos.

    A seeded subset when `num < len(dataset)` (in index order); all videos otherwise, as the
    FVD protocol takes all clips when a split has fewer than 2,048 (sihyun-yu/PVDM#30).
    `per_video` > 1 lets a small split give more clips: when `num` exceeds the videos, every
    video gives a second clip at another seeded start, then a third, up to `per_video` each
    (`min(num, per_video * len(dataset))` clips; the first clip of each video is the one of
    `per_video=1`).
    """
    if per_video < 1:
        raise ValueError(f"per_video must be at least 1, got {per_video}")
    count = min(num, len(dataset))
    order = np.random.default_rng([_EVAL_TAG, seed]).permutation(len(dataset))
    chosen = sorted(int(i) for i in order[:count])
    requests = [ClipRequest(i, mix_seed(_EVAL_TAG, seed, i)) for i in chosen]
    for k in range(1, per_video):
        more = sorted(int(i) for i in order[: max(0, num - len(requests))])
        requests += [ClipRequest(i, mix_seed(_EVAL_TAG, seed, i, k)) for i in more]
    return requests


def eval_clips(
    dataset: VideoDataset,
    num: int,
    *,
    seed: int,
    batch_size: int = 16,
    num_workers: int = 0,
    per_video: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of the `eval_requests` clips (same format as `make_loader`), deterministic."""
    requests = eval_requests(dataset, num, seed=seed, per_video=per_video)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=requests,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if num_workers else None,
    )
    yield from loader


def split_clips(
    cfg: Any,
    split: str,
    num: int,
    seed: int,
    *,
    purpose: str,
    clip_frames: int | None = None,
    per_video: int = 1,
) -> tuple[torch.Tensor, str]:
    """`num` fixed clips of `split` of the data `cfg` as uint8 [num, C, T, H, W] (fewer when the
    split has fewer than `num / per_video` videos), and the split they really came from:
    held-out ("test") clips of data without a test split are training clips, with the warning
    of `open_heldout` naming `purpose`, and "train" is returned so that a report can record it."""
    from pvdm.data.dataset import open_dataset, open_heldout

    if split == "test":
        dataset = open_heldout(cfg, clip_frames=clip_frames, purpose=purpose)
    else:
        dataset = open_dataset(cfg, clip_frames=clip_frames, split=split)
    batches = eval_clips(dataset, num, seed=seed, per_video=per_video)
    return torch.cat([b["video"] for b in batches]), dataset.split


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch: video `[B, C, T, H, W]` uint8, the rest int64 `[B]`."""
    batch = {"video": torch.stack([s["video"] for s in samples])}
    for key in ("label", "index", "start", "failed"):
        batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.int64)
    return batch


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)
