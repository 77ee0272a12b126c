"""Running the generative protocols: cached reference statistics, fake features, the metrics.

The flow of StyleGAN-V's `metric_main.calc_metric` for `fvd2048_16f`, `fvd2048_128f`,
`fvd2048_128f_subsample8f` and `isv2048_ucf`: real-clip detector statistics (cached on disk,
see `pvdm.metrics.protocols`), the same statistics of the fake clips, then the Frechet distance
(or the Inception Score of the fake clips alone). Every rank handles its share of the samples
(`pvdm.metrics.sources`); the streamed float64 statistics are summed over ranks, so a number
does not depend on the GPU count. Protocols that need the same fake clips (same count, clip
shape, resolution and seeds, e.g. `fvd2048_16f` and `isv2048_ucf`) share one pass of
generation. Reconstruction protocols run in `pvdm.metrics.recon.evaluate_recon`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

from tqdm import tqdm

from pvdm.data import DataConfig
from pvdm.errors import ConfigError
from pvdm.metrics.c3d import inception_score
from pvdm.metrics.protocols import (
    Detector,
    Protocol,
    load_refstats,
    refstats_key,
    refstats_path,
    save_refstats,
)
from pvdm.metrics.results import make_record
from pvdm.metrics.sources import Batch, RealClips
from pvdm.metrics.stats import FeatureStats, frechet_distance
from pvdm.runtime import from_rank0, rank_and_world

log = logging.getLogger(__name__)

FRECHET_METHOD = "eigh"  # see pvdm.metrics.stats.frechet_distance; recorded with every FVD


class FakeSource(TypingProtocol):
    """Fake clips: `pvdm.metrics.sources.FolderVideos` or `GeneratedVideos`."""

    def native_resolution(self) -> int: ...
    def describe(self, protocol: Protocol) -> dict[str, Any]: ...
    def check_count(self, protocol: Protocol) -> None: ...
    def batches(
        self,
        protocol: Protocol,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> Iterator[Batch]: ...


def progress_batches(
    batches: Iterable[Batch], total: int, desc: str, show: bool
) -> Iterator[Batch]:
    """`batches` with a progress bar of the samples done on all ranks (when `show`)."""
    with tqdm(total=total, desc=desc, unit="video", disable=not show) as bar:
        for videos, index in batches:
            yield videos, index
            bar.update(videos.shape[0] * rank_and_world()[1])


def resolve_protocol(
    protocol: Protocol,
    *,
    num: int | None = None,
    split: str | None = None,
    resolution: int | None = None,
) -> Protocol:
    """The protocol as run: fewer samples (renamed), another real split, a set resolution."""
    if num is not None:
        protocol = protocol.with_num(num)
    changes: dict[str, Any] = {}
    if split is not None and protocol.num_real > 0:
        changes["real_split"] = split
    if protocol.resolution is None and resolution is not None:
        changes["resolution"] = int(resolution)
    return dataclasses.replace(protocol, **changes) if changes else protocol


# --- reference statistics -----------------------------------------------------------------


@dataclass
class CachedStats:
    """A cache lookup: the statistics (on rank 0, after a hit), whether it hit, the file."""

    stats: FeatureStats | None
    hit: bool
    path: Path | None


def lookup_reference(
    protocol: Protocol,
    real: RealClips,
    detector: Detector,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> CachedStats:
    """Look the real clips' statistics up in the cache (rank 0 reads; every rank learns `hit`)."""
    if not use_cache:
        return CachedStats(None, False, None)
    key = refstats_key(real.identity, protocol, detector.sha256)
    path = refstats_path(key, cache_dir)
    stats = load_refstats(path, key) if rank_and_world()[0] == 0 else None
    hit = from_rank0(stats is not None)
    if hit and stats is not None:
        log.info("reference statistics for %s loaded from cache %s", protocol.name, path)
    return CachedStats(stats, hit, path)


def store_reference(
    protocol: Protocol, real: RealClips, detector: Detector, stats: FeatureStats, path: Path | None
) -> None:
    """Cache freshly computed (all-reduced) statistics; rank 0 writes, `path=None` skips."""
    if path is None or rank_and_world()[0] != 0:
        return
    key = refstats_key(real.identity, protocol, detector.sha256)
    save_refstats(path, stats, key, ddof=protocol.cov_ddof)
    log.info("reference statistics for %s computed and cached in %s", protocol.name, path)


def real_record(
    protocol: Protocol, real: RealClips, clips: int, cached: CachedStats | None
) -> dict[str, Any]:
    """What a result record says about the real clips."""
    record: dict[str, Any] = {
        "dataset": real.identity,
        "split": real.split,
        "videos_in_split": len(real.dataset),
        "videos_skipped": len(real.dataset.skipped),
        "clips": clips,
    }
    if cached is not None:
        record["cache"] = "hit" if cached.hit else ("miss" if cached.path else "off")
        record["refstats"] = str(cached.path) if cached.path else None
    return record


def reference_stats(
    protocol: Protocol,
    real: RealClips,
    detector: Detector,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[FeatureStats | None, dict[str, Any]]:
    """Detector statistics of the real clips, from the cache or computed (and then cached).

    Collective under torch.distributed. The statistics are returned on rank 0 (None on the
    others after a cache hit), with what the result record says about them.
    """
    rank, world = rank_and_world()
    cached = lookup_reference(protocol, real, detector, cache_dir=cache_dir, use_cache=use_cache)
    stats = cached.stats
    if not cached.hit:
        batches = real.batches(batch_size, rank=rank, world_size=world, num_workers=num_workers)
        stats = FeatureStats()
        for videos, _ in progress_batches(batches, len(real), f"{protocol.name} real", progress):
            stats.update(detector(videos))
        stats.all_reduce()
        store_reference(protocol, real, detector, stats, cached.path)
    clips = stats.count if stats is not None else len(real)
    return stats, real_record(protocol, real, clips, cached)


# --- generative metrics -------------------------------------------------------------------


def _fake_group_key(p: Protocol) -> tuple:
    return (p.num_fake, p.frames, p.stride, p.resolution, p.seed)


def evaluate(
    protocols: Sequence[Protocol],
    *,
    fake: FakeSource,
    data: DataConfig | None,
    detectors: Mapping[str, Detector],
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run FVD/IS protocols (resolved: see `resolve_protocol`); records on rank 0, [] elsewhere.

    `detectors` maps a protocol kind ("fvd", "isv") to its `Detector`; `data` gives the real
    videos (needed by FVD). Collective under torch.distributed: every rank calls it.
    """
    rank, world = rank_and_world()
    groups: dict[tuple, list[Protocol]] = {}
    for p in protocols:
        if p.kind not in ("fvd", "isv"):
            raise ValueError(f"evaluate() runs fvd and isv protocols, not {p.kind} ({p.name})")
        if p.resolution is None:
            raise ValueError(f"resolve the resolution of {p.name} first (resolve_protocol)")
        if p.kind == "fvd" and data is None:
            raise ConfigError(f"{p.name} compares with real videos: give the dataset with --data")
        fake.check_count(p)
        groups.setdefault(_fake_group_key(p), []).append(p)

    records = []
    for group in groups.values():
        start = time.perf_counter()
        real: dict[str, tuple[FeatureStats | None, dict[str, Any]]] = {}
        for p in group:
            if p.kind == "fvd":
                clips = RealClips.open(data, p.reference())
                real[p.name] = reference_stats(
                    p.reference(),
                    clips,
                    detectors["fvd"],
                    cache_dir=cache_dir,
                    use_cache=use_cache,
                    batch_size=batch_size,
                    num_workers=num_workers,
                    progress=progress,
                )
        lead = group[0]
        fake_stats = {p.name: FeatureStats(capture_rows=p.kind == "isv") for p in group}
        window_stats = {
            p.name: [FeatureStats() for _ in range(p.frames // p.window)] for p in group if p.window
        }
        batches = fake.batches(
            lead, batch_size, rank=rank, world_size=world, num_workers=num_workers
        )
        names = ",".join(p.name for p in group)
        for videos, index in progress_batches(batches, lead.num_fake, f"{names} fake", progress):
            for p in group:
                if p.window:
                    for k, stats in enumerate(window_stats[p.name]):
                        clip = videos[:, :, k * p.window : (k + 1) * p.window]
                        stats.update(detectors["fvd"](clip), index=index)
                else:
                    fake_stats[p.name].update(detectors[p.kind](videos), index=index)
        for p in group:
            if p.window:
                for stats in window_stats[p.name]:
                    stats.all_reduce()
                fake_stats[p.name] = window_stats[p.name][0]
            else:
                fake_stats[p.name].all_reduce()
            rows = fake_stats[p.name].all_rows() if p.kind == "isv" else None  # collective
            if rank != 0:
                continue
            sections: dict[str, Any] = {
                "fake": fake.describe(p),
                "detector": detectors[p.kind].describe(),
            }
            if p.kind == "fvd" and p.window:
                real_stats, sections["real"] = real[p.name]
                curve = [
                    frechet_distance(real_stats, w, ddof=p.cov_ddof, method=FRECHET_METHOD)
                    for w in window_stats[p.name]
                ]
                # the protocol's value: the mean over windows; each window's value beside it
                results = {p.name: sum(curve) / len(curve)}
                results |= {f"{p.name}_w{k:02d}": v for k, v in enumerate(curve)}
                sections["drift"] = {
                    "window_frames": p.window,
                    "window_start_frames": [k * p.window for k in range(len(curve))],
                    "fvd": curve,
                }
                sections["frechet"] = {"method": FRECHET_METHOD, "cov_ddof": p.cov_ddof}
                num_real = sections["real"]["clips"]
            elif p.kind == "fvd":
                real_stats, sections["real"] = real[p.name]
                value = frechet_distance(
                    real_stats, fake_stats[p.name], ddof=p.cov_ddof, method=FRECHET_METHOD
                )
                results = {p.name: value}
                sections["frechet"] = {"method": FRECHET_METHOD, "cov_ddof": p.cov_ddof}
                num_real = sections["real"]["clips"]
            else:
                mean, std = inception_score(rows, p.num_splits)
                results = {p.name: mean, f"{p.name}_std": std}
                num_real = 0
            records.append(
                make_record(
                    p,
                    results,
                    num_real=num_real,
                    num_fake=fake_stats[p.name].count,
                    total_time_sec=time.perf_counter() - start,
                    world_size=world,
                    **sections,
                )
            )
    return records
