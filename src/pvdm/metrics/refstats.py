"""Cached reference (real-data) feature statistics, as plain `.npz` files.

Real-clip statistics are expensive (2,048 clips through I3D) and identical between runs, so
they are cached, keyed by everything that changes them: the dataset's identity (given by the
caller, e.g. its root, split and resolution), the full protocol and the SHA-256 of the detector
file. The file holds mu, sigma, count, ddof and the key fields; it is written atomically and
read without pickle. A file whose stored key differs from the one asked for is a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pvdm.atomic import atomic_write_bytes
from pvdm.metrics.protocols import Protocol
from pvdm.metrics.stats import FeatureStats
from pvdm.weights import cache_dir

log = logging.getLogger(__name__)

REFSTATS_FORMAT = 1


@dataclass(frozen=True)
class RefStatsKey:
    """What reference statistics depend on."""

    dataset: str  # the dataset's identity, e.g. "ucf101:/data/UCF-101:train:256"
    protocol: str  # the protocol as canonical JSON (`protocol_fingerprint`)
    detector_sha256: str

    def digest(self) -> str:
        """A short hash of the key, used in the file name."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def protocol_fingerprint(protocol: Protocol) -> str:
    """Canonical JSON of every protocol field."""
    return json.dumps(dataclasses.asdict(protocol), sort_keys=True)


def refstats_key(dataset: str, protocol: Protocol, detector_sha256: str) -> RefStatsKey:
    """The cache key of a dataset's statistics under a protocol and detector file."""
    return RefStatsKey(dataset, protocol_fingerprint(protocol), detector_sha256)


def refstats_dir() -> Path:
    """$PVDM_CACHE/refstats, else ~/.cache/pvdm/refstats."""
    return cache_dir().parent / "refstats"


def refstats_path(key: RefStatsKey, folder: str | os.PathLike | None = None) -> Path:
    """Where the statistics of `key` are cached."""
    name = json.loads(key.protocol).get("name", "stats")
    return Path(folder or refstats_dir()) / f"{name}-{key.digest()}.npz"


def save_refstats(
    path: str | os.PathLike, stats: FeatureStats, key: RefStatsKey, ddof: int
) -> None:
    """Write mu, sigma (with `ddof`), count and the key to `path` atomically."""
    mu, sigma = stats.mean_cov(ddof)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        mu=mu,
        sigma=sigma,
        count=np.int64(stats.count),
        ddof=np.int64(ddof),
        format=np.int64(REFSTATS_FORMAT),
        **{f"key_{k}": np.str_(v) for k, v in dataclasses.asdict(key).items()},
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_refstats(path: str | os.PathLike, key: RefStatsKey) -> FeatureStats | None:
    """The cached statistics at `path` if they exist and were made for `key`, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = RefStatsKey(
                **{f.name: str(data[f"key_{f.name}"]) for f in dataclasses.fields(RefStatsKey)}
            )
            if int(data["format"]) != REFSTATS_FORMAT or stored != key:
                log.info("reference statistics %s were made for another key; recomputing", path)
                return None
            return FeatureStats.from_mean_cov(
                data["mu"], data["sigma"], int(data["count"]), int(data["ddof"])
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("unreadable reference statistics %s (%s); recomputing", path, e)
        return None
