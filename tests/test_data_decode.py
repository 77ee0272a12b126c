"""Decoding: frame counts, seek-based reads equal full decodes, damaged and odd inputs."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from data_helpers import CLIP_FRAMES, FORMATS, UCF_FRAMES, encode, real_frames, shared
from PIL import Image

import pvdm.data.decode as decode
from pvdm.data import read_video
from pvdm.data.decode import ReadError, decode_all, load_image, probe, read_frames
from pvdm.data.write import encode_video
from pvdm.errors import DataError


@pytest.fixture
def seek_log(monkeypatch):
    """Record, per read, whether the keyframe index was used and the first frame decoded."""
    log: list[tuple[bool, int]] = []
    original = decode._frames_from

    def frames_from(container, stream, info, first, use_index):
        gen = original(container, stream, info, first, use_index)
        for n, (index, frame) in enumerate(gen):
            if n == 0:
                log.append((use_index, index))
            yield index, frame

    monkeypatch.setattr(decode, "_frames_from", frames_from)
    return log


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_encoded_formats_count_and_seek_exactly(tmp_path, name, seek_log) -> None:
    path = encode(tmp_path / "v", name)
    with av.open(str(path)) as c:
        declared = c.streams.video[0].frames
    if name.startswith(("mkv", "webm")):
        assert declared == 0  # the container has no count: demuxing must find it
    info = probe(path)
    full = decode_all(path)
    assert info.num_frames == len(full) == 40
    assert (info.height, info.width) == full.shape[1:3] == (96, 160)
    for start in (0, 3, 8, 17, 24):
        clip = read_frames(path, info, range(start, start + 16))
        np.testing.assert_array_equal(clip, full[start : start + 16])
    strided = read_frames(path, info, range(5, 40, 3))
    np.testing.assert_array_equal(strided, full[5:40:3])
    if name not in ("gif", "avi-bframes"):
        # gif has one keyframe; avi with reordered frames decodes from the start on purpose.
        seek_log.clear()
        read_frames(path, info, range(24, 40))
        key = info.key_for(24)[0]
        assert 0 < key <= 24
        assert seek_log == [(True, key)], "a late clip must be read by seeking, not from frame 0"


@pytest.mark.parametrize("name", sorted(UCF_FRAMES))
def test_ucf101_avi_fixture(name) -> None:
    path = shared("ucf_mini", "UCF-101", name)
    info = probe(path)
    full = decode_all(path)
    assert info.num_frames == len(full) == UCF_FRAMES[name]
    for start in (0, 31, info.num_frames - 16):
        np.testing.assert_array_equal(
            read_frames(path, info, range(start, start + 16)), full[start : start + 16]
        )


def test_ucf101_packed_bframes_keep_decoder_order() -> None:
    """xvid packed B-frames give out-of-order pts; frames must follow the decoder's order."""
    path = shared("ucf_mini", "UCF-101", "ApplyEyeMakeup", "v_ApplyEyeMakeup_g01_c01.avi")
    full = decode_all(path)[:60, ::4, ::4].astype(np.float32)
    with av.open(str(path)) as c:
        pts = [f.pts for f in c.decode(video=0)][:60]
    assert pts != sorted(pts)  # the fixture really has the problem
    by_pts = full[np.argsort(pts, kind="stable")]
    jitter = np.abs(np.diff(full, axis=0)).mean()
    jitter_by_pts = np.abs(np.diff(by_pts, axis=0)).mean()
    assert jitter < 0.8 * jitter_by_pts  # decoder order is the smooth one


def test_mp4_fixture_frame_counts() -> None:
    for name, count in CLIP_FRAMES.items():
        assert probe(shared("clips", name)).num_frames == count, name


@pytest.mark.parametrize("name", ["mmaction2_demo_demo.mp4", "torchcodec_nasa_13013.mp4"])
def test_mp4_fixtures_seek_exactly(name) -> None:
    path = shared("clips", name)
    info = probe(path)
    full = decode_all(path)
    for start in (0, info.num_frames // 2, info.num_frames - 16):
        np.testing.assert_array_equal(
            read_frames(path, info, range(start, start + 16)), full[start : start + 16]
        )


def test_unreadable_files_give_reasons(tmp_path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "text.avi").write_text("not a video\n" * 50)
    with pytest.raises(ReadError, match="empty file"):
        probe(tmp_path / "empty.mp4")
    for name in ("garbage.mp4", "text.avi"):
        with pytest.raises(ReadError, match="not a readable video"):
            probe(tmp_path / name)


def test_truncated_mp4_with_index_at_end_is_unreadable(tmp_path) -> None:
    path = encode(tmp_path / "v", "mp4")
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError):
        probe(cut)


@pytest.mark.parametrize(("name", "keep"), [("avi", 0.85), ("mkv", 0.6)])
def test_truncated_file_keeps_the_frames_that_decode(tmp_path, name, keep) -> None:
    path = encode(tmp_path / "v", name)
    data = path.read_bytes()
    cut = tmp_path / f"cut{path.suffix}"
    cut.write_bytes(data[: int(len(data) * keep)])  # avi: past the reserved header space
    info = probe(cut)
    assert 5 <= info.num_frames < 40
    full = decode_all(path)
    last = read_frames(cut, info, [info.num_frames - 1])
    assert np.abs(last[0].astype(int) - full[info.num_frames - 1]).mean() < 20  # not garbage
    np.testing.assert_array_equal(read_frames(cut, info, range(3)), full[:3])


def test_grayscale_alpha_and_odd_sized_videos(tmp_path) -> None:
    frames = real_frames()[:12, :37, :51]  # odd height and width
    gray = encode_video(tmp_path / "gray.mkv", frames, codec="ffv1", pix_fmt="gray", gop=4)
    rgba = encode_video(tmp_path / "rgba.mov", frames, codec="png", pix_fmt="rgba", gop=4)
    del gray, rgba
    info = probe(tmp_path / "gray.mkv")
    clip = read_frames(tmp_path / "gray.mkv", info, range(4, 8))
    assert clip.shape == (4, 37, 51, 3) and (info.height, info.width) == (37, 51)
    assert (clip[..., 0] == clip[..., 1]).all() and (clip[..., 1] == clip[..., 2]).all()
    info = probe(tmp_path / "rgba.mov")
    clip = read_frames(tmp_path / "rgba.mov", info, range(4, 8))
    np.testing.assert_array_equal(clip, frames[4:8])  # png codec is lossless; alpha dropped


def test_images_gray_alpha_16bit_palette(tmp_path) -> None:
    rgb = real_frames()[0, :21, :33]
    gray = rgb[..., 1]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])).save(tmp_path / "a.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).save(tmp_path / "x.webp", lossless=True)
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"), np.dstack([gray] * 3))
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png"), np.dstack([gray] * 3))
    np.testing.assert_array_equal(load_image(tmp_path / "x.webp"), rgb)
    palette = load_image(tmp_path / "p.png")
    assert palette.shape == (21, 33, 3) and np.abs(palette.astype(int) - rgb).mean() < 20
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ReadError, match=r"bad\.jpg"):
        load_image(tmp_path / "bad.jpg")


def test_frame_folder_natural_order_and_mixed_sizes(tmp_path) -> None:
    frames = real_frames()[:12]
    for t in range(12):  # frame2 must come before frame10
        Image.fromarray(frames[t]).save(tmp_path / f"frame{t}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    Image.fromarray(frames[0][:50, :80]).save(tmp_path / "frame12.png")  # stray smaller frame
    info = probe(tmp_path)
    assert (info.kind, info.num_frames, info.height, info.width) == ("frames", 13, 96, 160)
    np.testing.assert_array_equal(read_frames(tmp_path, info, range(0, 12, 2)), frames[0:12:2])
    assert read_frames(tmp_path, info, range(10, 13)).shape == (3, 96, 160, 3)


def test_read_video_for_user_files(tmp_path) -> None:
    path = encode(tmp_path / "v", "mp4")
    full = decode_all(path)
    video = read_video(path, start=4, num_frames=5, stride=2)
    assert video.dtype == torch.uint8 and video.shape == (3, 5, 96, 160)
    np.testing.assert_array_equal(video.permute(1, 2, 3, 0).numpy(), full[4:14:2])
    assert read_video(path).shape[1] == 40
    with pytest.raises(DataError, match="40 frames"):
        read_video(path, start=30, num_frames=16)
    with pytest.raises(DataError, match="cannot read video"):
        read_video(tmp_path / "missing.mp4")
