"""Datasets and loaders: deterministic clips, workers equal no workers, runtime failures."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch
from data_helpers import encode, real_frames, shared

from pvdm.data import (
    ClipRequest,
    DataConfig,
    center_crop_resize,
    eval_clips,
    eval_requests,
    make_loader,
    open_dataset,
)
from pvdm.data.decode import decode_all
from pvdm.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "cache"))


def _synthetic(**kw) -> DataConfig:
    base = dict(resolution=32, frames=8, synthetic_videos=12, synthetic_frames=24)
    return DataConfig(**{**base, **kw})


def _batches(loader, count: int) -> list[dict[str, torch.Tensor]]:
    return list(itertools.islice(iter(loader), count))


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)


def test_clip_values_equal_transformed_full_decode(tmp_path) -> None:
    path = encode(tmp_path / "v", "mp4")
    dataset = open_dataset(DataConfig(path=str(path), resolution=48, frames=6, stride=3))
    assert dataset.span == 16
    clip = dataset.clip(0, 11)
    expected = center_crop_resize(decode_all(path)[11:27:3], 48)
    torch.testing.assert_close(clip, expected, rtol=0, atol=0)
    item = dataset[0]
    assert item["start"] == 0 and item["label"] == -1 and item["failed"] == 0
    torch.testing.assert_close(item["video"], dataset.clip(0, 0), rtol=0, atol=0)


def test_requests_are_deterministic_and_seeded() -> None:
    dataset = open_dataset(_synthetic())
    a = dataset[ClipRequest(3, 42)]
    b = dataset[ClipRequest(3, 42)]
    assert a["start"] == b["start"] and torch.equal(a["video"], b["video"])
    starts = {dataset[ClipRequest(3, seed)]["start"] for seed in range(20)}
    assert len(starts) > 5 and all(0 <= s <= 24 - 8 for s in starts)
    with pytest.raises(IndexError):
        dataset[12]


def test_double_length_clips_are_contiguous() -> None:
    cfg = _synthetic()
    single = open_dataset(cfg)
    double = open_dataset(cfg, clip_frames=2 * cfg.frames)
    assert double.clip(5, 3).shape == (3, 16, 32, 32)
    both = double.clip(5, 3)
    assert torch.equal(both[:, :8], single.clip(5, 3))
    assert torch.equal(both[:, 8:], single.clip(5, 11))


def test_loader_batches_and_restart() -> None:
    dataset = open_dataset(_synthetic())
    batches = _batches(make_loader(dataset, batch_size=4, seed=1, num_workers=0), 5)
    first = batches[0]
    assert first["video"].shape == (4, 3, 8, 32, 32) and first["video"].dtype == torch.uint8
    assert first["label"].dtype == torch.int64
    expected = [dataset.videos[i].label for i in first["index"].tolist()]
    assert first["label"].tolist() == expected
    resumed = _batches(make_loader(dataset, batch_size=4, seed=1, num_workers=0, start_batch=3), 2)
    _assert_same(resumed, batches[3:5])
    ranks = [
        _batches(make_loader(dataset, batch_size=2, seed=1, rank=r, world_size=2, num_workers=0), 1)
        for r in range(2)
    ]
    assert torch.cat([r[0]["index"] for r in ranks]).tolist() == first["index"].tolist()


def test_workers_give_the_same_batches_synthetic() -> None:
    dataset = open_dataset(_synthetic())
    plain = _batches(make_loader(dataset, batch_size=3, seed=7, num_workers=0), 4)
    workers = _batches(make_loader(dataset, batch_size=3, seed=7, num_workers=2), 4)
    _assert_same(plain, workers)


def test_workers_give_the_same_batches_pyav(tmp_path) -> None:
    frames = real_frames()
    for i, name in enumerate(["mp4", "mkv", "webm-vp8"]):
        encode(tmp_path / "data" / f"v{i}", name, frames[i : i + 30])
    dataset = open_dataset(DataConfig(path=str(tmp_path / "data"), resolution=32, frames=8))
    plain = _batches(make_loader(dataset, batch_size=2, seed=3, num_workers=0), 3)
    workers = _batches(make_loader(dataset, batch_size=2, seed=3, num_workers=2), 3)
    _assert_same(plain, workers)


def test_sky_fixture_through_the_loader() -> None:
    root = shared("sky_mini")
    dataset = open_dataset(DataConfig(path=str(root), split="test", resolution=32, frames=16))
    batch = next(iter(make_loader(dataset, batch_size=8, seed=0, num_workers=0)))
    assert sorted(batch["index"].tolist()) == list(range(8))  # one epoch = every video once
    assert batch["video"].shape == (8, 3, 16, 32, 32)
    assert batch["video"].float().std() > 10  # real content, not blank frames


def test_runtime_read_failure_substitutes_deterministically(tmp_path, caplog) -> None:
    frames = real_frames()
    for i in range(4):
        encode(tmp_path / "data" / f"v{i}", "mp4", frames[i : i + 24])
    dataset = open_dataset(DataConfig(path=str(tmp_path / "data"), resolution=32, frames=8))
    broken = next(i for i, v in enumerate(dataset.videos) if v.path.endswith("v2.mp4"))
    # The file scanned fine, then goes bad while training runs.
    (tmp_path / "data" / "v2.mp4").write_bytes(b"\0" * 5000)
    with caplog.at_level(logging.WARNING, logger="pvdm.data"):
        item = dataset[ClipRequest(broken, 9)]
        again = dataset[ClipRequest(broken, 9)]
    assert item["index"] != broken and item["failed"] == 1
    assert again["index"] == item["index"] and torch.equal(again["video"], item["video"])
    assert dataset.num_read_failures == 1
    warnings = [r for r in caplog.records if "v2.mp4" in r.getMessage()]
    assert len(warnings) == 1  # one warning per file, then it is skipped silently
    loader = make_loader(dataset, batch_size=4, seed=0, num_workers=0)
    batch = next(iter(loader))  # one epoch: the broken video is among the 4
    assert broken not in batch["index"].tolist()
    assert batch["failed"].tolist().count(0) == 3 and loader.num_substituted == 1


def test_all_videos_failing_is_a_data_error(tmp_path) -> None:
    path = encode(tmp_path / "v", "mp4", real_frames()[:20])
    dataset = open_dataset(DataConfig(path=str(path), resolution=32, frames=8))
    path.write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="no readable video"):
        dataset[0]


def test_eval_clips_one_per_video_deterministic() -> None:
    dataset = open_dataset(_synthetic())
    requests = eval_requests(dataset, 5, seed=2)
    assert requests == eval_requests(dataset, 5, seed=2)
    assert len({r.index for r in requests}) == 5
    assert [r.index for r in eval_requests(dataset, 100, seed=2)] == list(range(12))
    batches = list(eval_clips(dataset, 5, seed=2, batch_size=2))
    assert [len(b["index"]) for b in batches] == [2, 2, 1]
    videos = torch.cat([b["video"] for b in batches])
    for req, video, start in zip(requests, videos, torch.cat([b["start"] for b in batches])):
        assert start == dataset.start_for(req.index, req.seed)
        assert torch.equal(video, dataset.clip(req.index, int(start)))
    assert np.unique(torch.cat([b["start"] for b in batches]).numpy()).size > 1


def test_eval_clips_per_video_adds_clips_of_a_small_split() -> None:
    dataset = open_dataset(_synthetic())  # 12 videos
    one = eval_requests(dataset, 100, seed=2)
    three = eval_requests(dataset, 100, seed=2, per_video=3)
    assert three[:12] == one  # the first clip of every video is unchanged
    assert len(three) == 36 and len(set(three)) == 36
    assert sorted(r.index for r in three) == sorted(list(range(12)) * 3)
    assert eval_requests(dataset, 5, seed=2, per_video=3) == eval_requests(dataset, 5, seed=2)
    twenty = eval_requests(dataset, 20, seed=2, per_video=3)
    assert twenty[:12] == one and len(twenty) == 20
    assert len({r.index for r in twenty[12:]}) == 8  # second clips of 8 different videos
    starts = {dataset.start_for(r.index, r.seed) for r in three if r.index == 0}
    assert len(starts) > 1  # other windows of the same video
    with pytest.raises(ValueError, match="per_video"):
        eval_requests(dataset, 5, seed=2, per_video=0)
