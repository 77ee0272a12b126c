"""Caches and copies that must follow what they stand for.

The reference-statistics key follows the bytes of the real videos, a latent-cache rebuild that
dies part-way leaves the old cache whole, and a diffusion run encodes with the autoencoder copy
it samples with.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from eval_helpers import stand_in_detector
from PIL import Image

from pvdm.data import DataConfig
from pvdm.metrics import PROTOCOLS
from pvdm.metrics.runner import reference_stats
from pvdm.metrics.sources import RealClips

# --- reference statistics ---------------------------------------------------------------------


def _bmp_folders(root: Path, videos: torch.Tensor) -> list[Path]:
    """uint8 videos [B, C, T, H, W] as `root/clip<i>/<t>.bmp` (BMP: the size follows H x W)."""
    files = []
    for i, video in enumerate(videos):
        (root / f"clip{i}").mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(rearrange(video, "c t h w -> t h w c").numpy()):
            files.append(root / f"clip{i}" / f"{t:03d}.bmp")
            Image.fromarray(frame).save(files[-1])
    return files


def test_repainted_frames_miss_the_reference_cache(tmp_path, monkeypatch) -> None:
    """Frames re-extracted under the same names, counts, byte sizes and modification times
    (a copy that keeps times) are other data: the cached statistics must not be reused."""
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "pvdm-cache"))
    protocol = dataclasses.replace(PROTOCOLS["fvd2048_16f"].with_num(3), resolution=8)
    gen = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (3, 3, 16, 8, 8), generator=gen, dtype=torch.uint8)
    root = tmp_path / "real"
    files = _bmp_folders(root, videos)
    detector = stand_in_detector("fvd", "a")
    data = DataConfig(path=str(root))
    first, info = reference_stats(
        protocol, RealClips.open(data, protocol), detector, cache_dir=tmp_path
    )
    assert info["cache"] == "miss"

    times = {f: (f.stat().st_atime_ns, f.stat().st_mtime_ns) for f in files}
    sizes = {f: f.stat().st_size for f in files}
    _bmp_folders(root, 255 - videos)  # repainted: same names, counts and sizes
    for f, (atime, mtime) in times.items():
        os.utime(f, ns=(atime, mtime))
    assert {f: f.stat().st_size for f in files} == sizes

    real = RealClips.open(data, protocol)
    again, info = reference_stats(protocol, real, detector, cache_dir=tmp_path)
    assert info["cache"] == "miss", "statistics of the old frames were reused"
    fresh, _ = reference_stats(protocol, real, detector, use_cache=False)
    np.testing.assert_allclose(again.mean_cov(0)[0], fresh.mean_cov(0)[0], rtol=1e-12)
    assert not np.allclose(again.mean_cov(0)[0], first.mean_cov(0)[0])
    # unchanged data still hits
    _, info = reference_stats(
        protocol, RealClips.open(data, protocol), detector, cache_dir=tmp_path
    )
    assert info["cache"] == "hit"


def test_video_digest_follows_file_bytes_and_frame_names(tmp_path) -> None:
    from pvdm.data.digest import video_digest, video_digests

    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 100)
    before = video_digest(video)
    video.write_bytes(b"\x00" * 99 + b"\x01")  # one byte at the end
    assert video_digest(video) != before
    folder = tmp_path / "frames"
    _bmp_folders(folder, torch.zeros(1, 3, 2, 4, 4, dtype=torch.uint8))
    clip = folder / "clip0"
    digest = video_digest(clip)
    os.rename(clip / "001.bmp", clip / "002.bmp")  # the same bytes under another name
    assert video_digest(clip) != digest
    expected = [video_digest(video), video_digest(clip), video_digest(video)]
    assert video_digests([video, clip, video]) == expected
