"""Files on disk: folders of fake videos with links and empty files, frame folders written
whole or not at all, and file modes that another thread's umask read cannot spoil."""

from __future__ import annotations

import errno
import logging
import os

import pytest
import torch
from data_helpers import deadline

from pvdm.data import DataConfig, open_dataset, write_video
from pvdm.errors import DataError
from pvdm.metrics.sources import FolderVideos, list_videos


def _video(path, value: int = 0):
    return write_video(path, torch.full((3, 4, 16, 16), value, dtype=torch.uint8))


# --- folders of fake videos -------------------------------------------------------------------


def test_links_to_one_file_are_one_sample(tmp_path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    _video(fake / "a.mkv")
    _video(fake / "b.mkv", 9)
    os.symlink(fake / "a.mkv", fake / "c.mkv")
    (fake / "more").mkdir()
    os.symlink(fake / "a.mkv", fake / "more" / "d.mkv")
    os.symlink(fake / "more", fake / "same")  # a link to a folder inside: read once
    assert [p.name for p in list_videos(fake)] == ["a.mkv", "b.mkv"]


def test_a_link_to_the_root_is_not_followed(tmp_path, caplog) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    _video(fake / "a.mkv")
    os.symlink("/", fake / "everything")
    with deadline(20), caplog.at_level(logging.WARNING, logger="pvdm.data.layouts"):
        videos = list_videos(fake)
    assert [p.name for p in videos] == ["a.mkv"]
    assert f"skipping {fake / 'everything'}: it links to /, a folder that holds" in caplog.text


def test_links_out_of_a_fake_folder_are_skipped_but_datasets_follow_them(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _video(elsewhere / "x.mkv")
    fake = tmp_path / "fake"
    fake.mkdir()
    _video(fake / "a.mkv")
    os.symlink(elsewhere, fake / "linked")
    os.symlink(tmp_path, fake / "up")  # a folder that holds the dataset: never entered
    with caplog.at_level(logging.WARNING, logger="pvdm.data.layouts"):
        assert [p.name for p in list_videos(fake)] == ["a.mkv"]
    assert f"it links to {elsewhere}, outside" in caplog.text
    # a training folder may be assembled from links to other disks
    dataset = open_dataset(DataConfig(path=str(fake), resolution=16, frames=4))
    assert sorted(os.path.basename(v.path) for v in dataset.videos) == ["a.mkv", "x.mkv"]


def test_empty_files_are_refused_not_called_lossy(tmp_path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    for i in range(3):
        _video(fake / f"sample-{i:04d}.mkv")
    (fake / "sample-0003.mkv").write_bytes(b"")  # the disk filled up while it was written
    with pytest.raises(DataError, match=r"1 empty file\(s\) \(0 bytes: sample-0003\.mkv\)"):
        FolderVideos.open(fake)


# --- frame folders ----------------------------------------------------------------------------


def test_a_full_disk_leaves_no_frame_folder_and_keeps_the_old_one(tmp_path, monkeypatch) -> None:
    from PIL import Image

    from pvdm.data.write import write_frame_folder

    video = torch.randint(0, 256, (3, 6, 8, 8), dtype=torch.uint8)
    old = write_frame_folder(tmp_path / "sample-0000", video[:, :2])
    real_save = Image.Image.save
    saved = []

    def disk_fills(self, fp, *args, **kwargs):
        saved.append(fp)
        if len(saved) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_fills)
    for name in ("sample-0000", "sample-0001"):
        saved.clear()
        with pytest.raises(OSError, match="No space left"):
            write_frame_folder(tmp_path / name, video)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample-0000"]  # no temporary folder
    assert sorted(p.name for p in old.iterdir()) == ["000000.png", "000001.png"]


def test_frame_folders_get_the_usual_modes(tmp_path) -> None:
    from pvdm.data.write import write_frame_folder

    old = os.umask(0o022)
    try:
        folder = write_frame_folder(tmp_path / "v", torch.zeros(3, 2, 8, 8, dtype=torch.uint8))
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755  # readable by a web server, like the files
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o644}


# --- file modes -------------------------------------------------------------------------------


def test_atomic_writes_read_the_umask_without_setting_it(tmp_path, monkeypatch) -> None:
    from pvdm.atomic import atomic_write_text

    old = os.umask(0o027)
    calls = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
    try:
        atomic_write_text(tmp_path / "settings.json", "{}")
    finally:
        monkeypatch.undo()
        os.umask(old)
    # setting it, even for a moment, made files other threads created then world-writable
    assert calls == []
    assert (tmp_path / "settings.json").stat().st_mode & 0o777 == 0o640
