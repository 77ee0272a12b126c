"""Scanning: bad files skipped with one warning each, clear errors, and the metadata cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import encode, real_frames, write_frames
from PIL import Image

import pvdm.data.scan as scan_module
from pvdm.data import DataConfig, index_dir, open_dataset
from pvdm.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def probe_calls(monkeypatch):
    calls: list[str] = []
    original = scan_module.probe_or_reason

    def counting(path):
        calls.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(scan_module, "probe_or_reason", counting)
    return calls


def _bad_folder(root: Path) -> Path:
    frames = real_frames()
    data = root / "videos"
    good = encode(data / "good", "mp4", frames[:24])
    encode(data / "short", "mp4", frames[:3])
    (data / "empty.mp4").write_bytes(b"")
    (data / "garbage.avi").write_bytes(np.random.default_rng(1).bytes(3000))
    (data / "truncated.mp4").write_bytes(good.read_bytes()[:2000])
    gray = data / "gray_frames"
    gray.mkdir()
    for t in range(20):  # grayscale, odd-sized frames: repaired, not skipped
        Image.fromarray(frames[t, :45, :63, 0]).save(gray / f"{t:03d}.png")
    rgba = data / "rgba_frames"
    rgba.mkdir()
    for t in range(20):
        Image.fromarray(np.dstack([frames[t], frames[t, ..., :1]])).save(rgba / f"{t:03d}.png")
    write_frames(data / "broken_frames", frames[:2])
    (data / "broken_frames" / "frame00000.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return data


def test_bad_files_are_skipped_with_one_warning_each(tmp_path, caplog) -> None:
    data = _bad_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pvdm.data"):
        dataset = open_dataset(DataConfig(path=str(data)))
    assert sorted(Path(v.path).name for v in dataset.videos) == [
        "good.mp4",
        "gray_frames",
        "rgba_frames",
    ]
    reasons = {Path(p).name: r for p, r in dataset.skipped}
    assert set(reasons) == {
        "short.mp4",
        "empty.mp4",
        "garbage.avi",
        "truncated.mp4",
        "broken_frames",
    }
    assert reasons["short.mp4"].startswith("too short (3 frames")
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert "not a readable video" in reasons["garbage.avi"]
    assert "frame00000.jpg" in reasons["broken_frames"]
    for name, reason in reasons.items():
        hits = [r for r in caplog.records if name in r.getMessage()]
        assert len(hits) == 1 and reason in hits[0].getMessage()
    assert any("5 of 8 videos skipped" in r.getMessage() for r in caplog.records)
    gray = next(v for v in dataset.videos if v.path.endswith("gray_frames"))
    assert (gray.height, gray.width) == (45, 63)
    clip = dataset.clip(dataset.videos.index(gray), 2)
    assert clip.shape == (3, 16, 64, 64)
    assert (clip[0] == clip[1]).all() and (clip[1] == clip[2]).all()


def test_no_usable_video_is_one_data_error(tmp_path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mkv").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match=r"no usable video .*2 skipped.*pvdm data inspect"):
        open_dataset(DataConfig(path=str(tmp_path)))
    (tmp_path / "a.mp4").unlink()
    (tmp_path / "b.mkv").unlink()
    with pytest.raises(DataError, match="no videos found"):
        open_dataset(DataConfig(path=str(tmp_path)))


def test_scan_is_cached_and_changed_files_rescanned(tmp_path, probe_calls) -> None:
    frames = real_frames()[:20]
    data = tmp_path / "data"
    a = encode(data / "a", "mp4", frames)
    encode(data / "b", "mkv", frames)
    write_frames(data / "c", frames)
    (data / "bad.mp4").write_bytes(b"x" * 100)
    cfg = DataConfig(path=str(data))
    first = open_dataset(cfg)
    assert sorted(probe_calls) == ["a.mp4", "b.mkv", "bad.mp4", "c"]
    assert len(list(index_dir().glob("*.json"))) == 1
    assert str(index_dir()).startswith(str(tmp_path / "cache"))
    probe_calls.clear()
    again = open_dataset(cfg)
    assert probe_calls == []  # everything, the failure included, came from the cache
    assert again.videos == first.videos and again.skipped == first.skipped
    encode(a, "mp4", frames[:18])  # a changed file (size and mtime) is scanned again
    os.utime(a, ns=(1, 1))
    write_frames(data / "c", frames[:1], ".png")  # a frame added to a frame folder
    probe_calls.clear()
    third = open_dataset(cfg)
    assert sorted(probe_calls) == ["a.mp4", "c"]
    counts = {Path(v.path).name: v.num_frames for v in third.videos}
    assert counts == {"a.mp4": 18, "b.mkv": 20, "c": 21}
    probe_calls.clear()
    open_dataset(DataConfig(path=str(data), cache=False))
    assert len(probe_calls) == 4


def test_corrupt_cache_file_is_ignored(tmp_path) -> None:
    data = tmp_path / "data"
    encode(data / "a", "mp4", real_frames()[:20])
    open_dataset(DataConfig(path=str(data)))
    (cache_file,) = index_dir().glob("*.json")
    cache_file.write_text("{ not json")
    assert len(open_dataset(DataConfig(path=str(data)))) == 1
