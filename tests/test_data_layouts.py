"""Dataset discovery: UCF-101 folds and splits, SkyTimelapse one- and two-level, any folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from data_helpers import encode, real_frames, shared, write_frames

from pvdm.data import DataConfig, open_dataset
from pvdm.data.layouts import detect_layout, discover
from pvdm.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "cache"))


def _names(dataset) -> list[str]:
    return [Path(v.path).name for v in dataset.videos]


@pytest.mark.parametrize("sub", [(), ("UCF-101",)])
def test_ucf101_fold_splits_and_labels(sub) -> None:
    root = shared("ucf_mini", *sub)
    assert detect_layout(root) == "ucf101"
    train = open_dataset(DataConfig(path=str(root), split="train"))
    test = open_dataset(DataConfig(path=str(root), split="test"))
    both = open_dataset(DataConfig(path=str(root), split="all"))
    assert train.layout == "ucf101"
    # classInd numbers ApplyEyeMakeup 1 and CricketShot 24: labels follow that order.
    assert train.classes == ["ApplyEyeMakeup", "CricketShot"]
    assert _names(train) == ["v_CricketShot_g04_c01.avi"] and train.videos[0].label == 1
    assert _names(test) == ["v_ApplyEyeMakeup_g01_c01.avi"] and test.videos[0].label == 0
    assert sorted(_names(both)) == sorted(_names(train) + _names(test))
    assert {v.num_frames for v in both.videos} == {164, 79}
    with pytest.raises(DataError, match="trainlist02"):
        open_dataset(DataConfig(path=str(root), split="train", fold=2))
    with pytest.raises(DataError, match="train, test or all"):
        open_dataset(DataConfig(path=str(root), split="val"))


def _link_ucf(tmp_path: Path) -> Path:
    src = shared("ucf_mini", "UCF-101")
    root = tmp_path / "UCF-101"
    for name in ("ApplyEyeMakeup", "CricketShot"):
        (root / name).mkdir(parents=True)
        for video in (src / name).iterdir():
            os.symlink(video, root / name / video.name)
    (root / "ucfTrainTestlist").mkdir()
    return root


def test_ucf101_lists_case_and_missing_files(tmp_path) -> None:
    root = _link_ucf(tmp_path)
    lists = root / "ucfTrainTestlist"
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 CricketShot\n")
    (lists / "trainlist03.txt").write_text(
        "applyeyemakeup/V_ApplyEyeMakeup_g01_c01.avi 1\n"  # case differs from the disk
        "CricketShot/v_CricketShot_g99_c01.avi 2\n"  # listed, not on disk
    )
    (lists / "testlist03.txt").write_text("CricketShot/v_CricketShot_g04_c01.avi\n")
    found = discover(tmp_path, "auto", "all", 3)
    assert [(p.name, label) for p, label in found.items] == [
        ("v_ApplyEyeMakeup_g01_c01.avi", 0),
        ("v_CricketShot_g04_c01.avi", 1),
    ]
    assert len(found.missing) == 1 and "not found" in found.missing[0][1]


def test_ucf101_without_lists_is_a_clear_error(tmp_path) -> None:
    root = tmp_path / "UCF-101" / "Archery"
    root.mkdir(parents=True)
    with pytest.raises(DataError, match="ucfTrainTestlist"):
        open_dataset(DataConfig(path=str(tmp_path)))


def test_sky_one_level() -> None:
    root = shared("sky_mini")
    assert detect_layout(root) == "sky"
    counts = {
        split: len(open_dataset(DataConfig(path=str(root), split=split)))
        for split in ("train", "test", "all")
    }
    assert counts == {"train": 40, "test": 8, "all": 48}
    test = open_dataset(DataConfig(path=str(root), split="test"))
    assert test.classes is None and {v.label for v in test.videos} == {-1}
    assert {(v.num_frames, v.height, v.width) for v in test.videos} == {(32, 128, 128)}


def test_sky_two_level_layout(tmp_path) -> None:
    frames = real_frames()[:20]
    for split, videos in (("train", 2), ("test", 1)):
        for v in range(videos):
            for c in range(2):
                write_frames(tmp_path / "SKY" / split / f"video{v}" / f"clip{c}", frames[: 16 + c])
    root = tmp_path / "SKY"
    assert detect_layout(root) == "sky"
    train = open_dataset(DataConfig(path=str(root), split="train"))
    assert train.layout == "sky" and len(train) == 4
    assert [Path(v.path).relative_to(root).as_posix() for v in train.videos] == [
        "train/video0/clip0",
        "train/video0/clip1",
        "train/video1/clip0",
        "train/video1/clip1",
    ]
    assert [v.num_frames for v in train.videos] == [16, 17, 16, 17]
    # A 32-frame (conditional diffusion) clip does not fit: every clip folder is skipped.
    with pytest.raises(DataError, match="too short"):
        open_dataset(DataConfig(path=str(root), split="test"), clip_frames=32)


def test_folder_with_class_subfolders_and_frame_folders(tmp_path) -> None:
    frames = real_frames()[:20]
    encode(tmp_path / "walk" / "a", "mp4", frames)
    encode(tmp_path / "walk" / "deeper" / "b", "mkv", frames)
    write_frames(tmp_path / "run" / "c", frames, ".png")
    (tmp_path / "run" / "readme.txt").write_text("not a video")
    dataset = open_dataset(DataConfig(path=str(tmp_path), layout="folder"))
    assert dataset.classes == ["run", "walk"]
    got = sorted((Path(v.path).relative_to(tmp_path).as_posix(), v.label) for v in dataset.videos)
    assert got == [("run/c", 0), ("walk/a.mp4", 1), ("walk/deeper/b.mkv", 1)]
    assert all(v.num_frames == 20 for v in dataset.videos)


def test_folder_without_classes_and_single_file(tmp_path) -> None:
    frames = real_frames()[:20]
    encode(tmp_path / "x", "webm-vp9", frames)
    write_frames(tmp_path / "frames_a", frames)
    dataset = open_dataset(DataConfig(path=str(tmp_path)))
    assert dataset.layout == "folder" and dataset.classes is None
    assert sorted(_names(dataset)) == ["frames_a", "x.webm"]
    single = open_dataset(DataConfig(path=str(tmp_path / "x.webm")))
    assert _names(single) == ["x.webm"] and single.videos[0].num_frames == 20


def test_folder_split_subfolders(tmp_path) -> None:
    frames = real_frames()[:20]
    encode(tmp_path / "train" / "a", "mp4", frames)
    encode(tmp_path / "train" / "b", "mp4", frames)
    encode(tmp_path / "test" / "c", "mp4", frames)
    cfg = DataConfig(path=str(tmp_path), layout="folder")
    assert sorted(_names(open_dataset(cfg, split="train"))) == ["a.mp4", "b.mp4"]
    assert _names(open_dataset(cfg, split="test")) == ["c.mp4"]
    assert len(open_dataset(cfg, split="all")) == 3
    with pytest.raises(DataError, match="no 'val' folder"):
        open_dataset(cfg, split="val")


def test_missing_path_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(DataConfig(path=str(tmp_path / "nope")))


def test_open_heldout_uses_the_test_split_or_says_it_uses_training_videos(tmp_path, caplog) -> None:
    from pvdm.data import open_heldout

    frames = real_frames()[:20]
    split = tmp_path / "split"
    encode(split / "train" / "a", "mp4", frames)
    encode(split / "test" / "b", "mp4", frames)
    flat = tmp_path / "flat"
    encode(flat / "a", "mp4", frames)
    encode(flat / "b", "mp4", frames)
    only_train = tmp_path / "only_train"
    encode(only_train / "train" / "a", "mp4", frames)

    def heldout(path: Path):
        caplog.clear()
        cfg = DataConfig(path=str(path), resolution=32, frames=8)
        with caplog.at_level("WARNING", logger="pvdm"):
            return _names(open_heldout(cfg, purpose="the check")), caplog.text

    names, text = heldout(split)
    assert names == ["b.mp4"] and "TRAINING" not in text
    names, text = heldout(flat)  # "test" of a folder without splits is every (training) video
    assert names == ["a.mp4", "b.mp4"]
    assert "the check uses TRAINING videos" in text and "no train/test sub-folders" in text
    assert open_dataset(DataConfig(path=str(flat), split="test")).unsplit
    names, text = heldout(only_train)
    assert names == ["a.mp4"] and "the check uses TRAINING videos" in text
    assert "no 'test' folder" in text
