"""Caches and copies that must follow what they stand for.

The reference-statistics key follows the bytes of the real videos, a latent-cache rebuild that
dies part-way leaves the old cache whole, and a diffusion run encodes with the autoencoder copy
it samples with.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from eval_helpers import stand_in_detector
from PIL import Image
from train_helpers import TINY_AE, TINY_DM

import pvdm.diffusion.cache as cache_module
import pvdm.train.diffusion as dm_train
from pvdm.config import apply_overrides
from pvdm.data import DataConfig, open_dataset
from pvdm.diffusion.cache import LatentCache, build_latent_cache, model_fingerprint
from pvdm.metrics import PROTOCOLS
from pvdm.metrics.runner import reference_stats
from pvdm.metrics.sources import RealClips
from pvdm.models import TriplaneAutoencoder, load_model
from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS

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


# --- latent cache rebuilds --------------------------------------------------------------------


def _tiny_autoencoder(seed: int) -> TriplaneAutoencoder:
    torch.manual_seed(seed)
    return TriplaneAutoencoder(apply_overrides(AUTOENCODER_RUNS["debug"](), TINY_AE).model)


def test_a_killed_cache_rebuild_leaves_the_old_cache_whole(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "pvdm-cache"))
    data = DataConfig(resolution=16, frames=4, synthetic_videos=4, synthetic_frames=12)
    dataset = open_dataset(data, clip_frames=8)
    old_ae, new_ae = _tiny_autoencoder(0), _tiny_autoencoder(1)
    out = tmp_path / "latents"
    settings = dict(frames=4, windows_per_video=1, batch_size=2, shard_size=2, progress=False)
    build_latent_cache(old_ae, dataset, out, **settings)  # two shards
    old = LatentCache(out).tensors

    real_save = cache_module.save_file
    calls = []

    def killed_after_one_shard(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies while writing the second shard
        real_save(tensors, path)

    monkeypatch.setattr(cache_module, "save_file", killed_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(new_ae, dataset, out, **settings)
    monkeypatch.undo()
    kept = LatentCache(out)  # the old cache, all of it
    assert kept.manifest["autoencoder_fingerprint"] == model_fingerprint(old_ae)
    assert all(torch.equal(kept.tensors[k], v) for k, v in old.items())

    build_latent_cache(new_ae, dataset, out, **settings)  # finished: all new, old shards gone
    new = LatentCache(out)
    assert new.manifest["autoencoder_fingerprint"] == model_fingerprint(new_ae)
    assert not torch.equal(new.tensors["target"], old["target"])
    on_disk = sorted(p.name for p in out.glob("shard-*"))
    assert on_disk == sorted(s["file"] for s in new.manifest["shards"]) and len(on_disk) == 2


# --- the autoencoder of a diffusion run -------------------------------------------------------


def test_a_resumed_diffusion_run_encodes_with_the_copy_it_samples_with(
    tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "pvdm-cache"))
    source = tmp_path / "ae"
    _tiny_autoencoder(0).save_pretrained(source)
    encoders = []
    real_batches = dm_train.EncodedBatches

    def spy(loader_factory, autoencoder, frames, precision):
        encoders.append(model_fingerprint(autoencoder))
        return real_batches(loader_factory, autoencoder, frames, precision)

    monkeypatch.setattr(dm_train, "EncodedBatches", spy)
    overrides = [*TINY_DM, f"autoencoder={source}", "data.resolution=16", "data.frames=4"]
    overrides += ["train.preview_every=0", "train.checkpoint_every=1", "data.num_workers=0"]
    run = tmp_path / "dm"
    dm_train.train_diffusion(
        apply_overrides(DIFFUSION_RUNS["debug"](), [*overrides, "train.max_steps=1"]), run
    )
    copy = model_fingerprint(load_model(run / "autoencoder"))
    assert encoders == [copy]

    _tiny_autoencoder(1).save_pretrained(source)  # the autoencoder's own run moved on
    with caplog.at_level(logging.WARNING, logger="pvdm.train.diffusion"):
        dm_train.train_diffusion(
            apply_overrides(DIFFUSION_RUNS["debug"](), [*overrides, "train.max_steps=2"]), run
        )
    assert encoders == [copy, copy], "the resumed run encoded with another autoencoder"
    assert model_fingerprint(load_model(run / "autoencoder")) == copy  # the copy is kept
    assert "no longer the autoencoder this run started with" in caplog.text
