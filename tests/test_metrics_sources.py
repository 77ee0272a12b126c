"""Evaluation clip sources: real clips per protocol, folders of fake videos, sharding by index."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import pytest
import torch
from einops import rearrange
from eval_helpers import real_clips, sky, write_frame_folders

from pvdm.data import DataConfig, write_video
from pvdm.diffusion import SamplingConfig
from pvdm.errors import DataError
from pvdm.metrics import PROTOCOLS
from pvdm.metrics.sources import (
    FolderVideos,
    GeneratedVideos,
    RealClips,
    list_videos,
    lossy_reason,
    resize_videos,
    shard,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "cache"))


def _protocol(num: int, resolution: int = 32, **changes):
    p = PROTOCOLS["fvd2048_16f"].with_num(num)
    return dataclasses.replace(p, resolution=resolution, **changes)


def test_shards_partition_the_samples() -> None:
    parts = [shard(7, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard(1, 1, 2) == []


def test_real_clips_are_the_data_layer_eval_clips_and_shard_by_index() -> None:
    protocol = _protocol(5)
    real = RealClips.open(DataConfig(path=str(sky())), protocol)
    assert len(real) == 5 and len(real.dataset) == 40
    expected = real_clips(5, 32)  # one clip per video at the seeded offsets
    whole = list(real.batches(2))
    assert [i.tolist() for _, i in whole] == [[0, 1], [2, 3], [4]]
    assert torch.equal(torch.cat([v for v, _ in whole]), expected)
    # Two ranks together read the same clips, each the indices i % 2 == rank.
    for rank in (0, 1):
        videos, index = zip(*real.batches(8, rank=rank, world_size=2))
        assert torch.cat(index).tolist() == shard(5, rank, 2)
        assert torch.equal(torch.cat(videos), expected[rank::2])
    # The clip shape follows the protocol: 16 frames every 2nd, at 24 pixels.
    strided = RealClips.open(DataConfig(path=str(sky())), _protocol(2, 24, stride=2))
    videos, _ = next(strided.batches(2))
    assert videos.shape == (2, 3, 16, 24, 24) and videos.dtype == torch.uint8


def test_real_clip_identity_tracks_the_data(tmp_path) -> None:
    protocol = _protocol(2)
    root = tmp_path / "videos"
    write_frame_folders(root, torch.zeros(2, 3, 16, 8, 8, dtype=torch.uint8))
    first = RealClips.open(DataConfig(path=str(root)), protocol).identity
    assert first == RealClips.open(DataConfig(path=str(root)), protocol).identity
    write_frame_folders(root / "more", torch.zeros(1, 3, 16, 8, 8, dtype=torch.uint8))
    assert RealClips.open(DataConfig(path=str(root)), protocol).identity != first


def test_held_out_clips_of_unsplit_data_warn_and_are_recorded_as_train(tmp_path, caplog) -> None:
    from pvdm.metrics.runner import real_record

    root = tmp_path / "videos"  # no train/ and test/ sub-folders
    write_frame_folders(root, torch.zeros(2, 3, 16, 8, 8, dtype=torch.uint8))
    recon = dataclasses.replace(PROTOCOLS["recon2048_16f"].with_num(2), resolution=8)
    assert recon.real_split == "test"
    with caplog.at_level(logging.WARNING, logger="pvdm.metrics.sources"):
        real = RealClips.open(DataConfig(path=str(root)), recon)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"recon2_16f uses TRAINING videos of {root}"
    ]
    assert real.split == "train" and ":train:" in real.identity and len(real) == 2
    assert real_record(recon, real, 2, None)["split"] == "train"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pvdm.metrics.sources"):
        fvd = RealClips.open(DataConfig(path=str(root)), _protocol(2, 8))
    assert fvd.split == "train" and not caplog.records  # the train split was asked for


def test_folder_of_fakes_reads_each_video_once_from_frame_zero(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (3, 3, 20, 32, 32), generator=gen, dtype=torch.uint8)
    folder = tmp_path / "fake"
    write_frame_folders(folder, videos)  # clip0, clip1, clip2 (lossless)
    write_video(folder / "clip10.mkv", videos[1])  # lossless FFV1
    write_video(folder / "grid.png", videos[:, :, :2])  # a picture, not a video
    names = [p.name for p in list_videos(folder)]
    assert names == ["clip0", "clip1", "clip2", "clip10.mkv"]  # natural order
    assert lossy_reason(list_videos(folder)) is None

    fake = FolderVideos.open(folder)
    assert fake.lossy is None
    (clip10, _), *_ = fake.batches(_protocol(4, 32), 4)
    assert torch.equal(clip10[3], videos[1, :, :16])  # FFV1 decodes bit-exactly
    assert fake.native_resolution() == 32
    got = list(fake.batches(_protocol(3, 32), 2))
    assert [i.tolist() for _, i in got] == [[0, 1], [2]]
    assert torch.equal(torch.cat([v for v, _ in got]), videos[:, :, :16])  # frames 0..15
    # Stride and resolution follow the protocol.
    (small, _), *_ = fake.batches(_protocol(1, 16, stride=1), 1)
    assert small.shape == (1, 3, 16, 16, 16)
    (strided, _), *_ = fake.batches(_protocol(1, 32, stride=1, frames=10), 1)
    assert torch.equal(strided[0], videos[0, :, :10])


def test_one_video_in_two_formats_is_refused(tmp_path) -> None:
    folder = tmp_path / "fake"
    video = torch.zeros(3, 16, 8, 8, dtype=torch.uint8)
    write_video(folder / "sample-0000.mp4", video)
    write_video(folder / "sample-0000.gif", video)  # what pvdm sample used to write
    with pytest.raises(DataError, match=r"sample-0000\.(gif|mp4) and sample-0000\.(gif|mp4)"):
        FolderVideos.open(folder)


def test_lossy_fakes_warn_and_are_recorded(tmp_path, caplog) -> None:
    folder = tmp_path / "fake"
    video = torch.zeros(3, 16, 16, 16, dtype=torch.uint8)
    write_video(folder / "a.mp4", video)
    write_video(folder / "b.gif", video)
    write_video(folder / "c.mkv", video)
    with caplog.at_level("WARNING", logger="pvdm"):
        fake = FolderVideos.open(folder)
    assert fake.lossy == "1 h264 .mp4, 1 gif .gif (lossy)"
    assert "--format png" in caplog.text and "lossy" in caplog.text
    assert fake.describe(_protocol(3, 16))["lossy"] == fake.lossy


def test_mp4_and_gif_fakes_decode_close_to_what_was_written(tmp_path) -> None:
    ramp = torch.linspace(0, 255, 48)
    video = torch.zeros(3, 16, 32, 48, dtype=torch.uint8)
    for t in range(16):  # a smooth red ramp moving right (GIF drops repeated frames)
        video[0, t] = ramp.roll(3 * t).round().to(torch.uint8)
    for suffix in (".mp4", ".gif"):
        folder = tmp_path / suffix[1:]
        write_video(folder / f"v{suffix}", video)
        (got, _), *_ = FolderVideos.open(folder).batches(_protocol(1, 32), 1)
        expected = resize_videos(video[None], 32)  # the centre 32x32 square
        assert got.shape == expected.shape
        assert (got.float() - expected.float()).abs().mean() < 6


def test_fake_folder_errors(tmp_path) -> None:
    folder = write_frame_folders(tmp_path / "fake", torch.zeros(2, 3, 12, 8, 8, dtype=torch.uint8))
    fake = FolderVideos.open(folder)
    with pytest.raises(DataError, match=r"holds 2 videos but fvd2048_16f needs 2048.*--num 2"):
        fake.check_count(dataclasses.replace(PROTOCOLS["fvd2048_16f"], resolution=8))
    with pytest.raises(DataError, match="has 12 frames"):
        next(fake.batches(_protocol(2, 8), 2))  # 16-frame clips from 12-frame videos
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos in --fake"):
        FolderVideos.open(tmp_path / "empty")
    with pytest.raises(DataError, match="is not a folder"):
        FolderVideos.open(tmp_path / "missing")


def test_videos_shorter_than_the_clip_are_skipped_and_all_clips_taken_if_fewer(tmp_path):
    root = tmp_path / "videos"
    write_frame_folders(root / "long", torch.zeros(2, 3, 20, 8, 8, dtype=torch.uint8))
    write_frame_folders(root / "short", torch.zeros(1, 3, 12, 8, 8, dtype=torch.uint8))
    real = RealClips.open(DataConfig(path=str(root)), _protocol(5, 8))
    assert len(real.dataset) == 2 and len(real.dataset.skipped) == 1 and len(real) == 2
    starts = [real.dataset.start_for(r.index, r.seed) for r in real.requests]
    assert all(0 <= s <= 4 for s in starts)  # a random offset within each 20-frame video
    with pytest.raises(DataError, match=r"gives a fvd5_16f clip of 121 frames \(3 too short\)"):
        RealClips.open(DataConfig(path=str(root)), _protocol(5, 8, stride=8))


def test_fake_videos_decode_at_the_protocol_resolution_with_the_same_pixels(
    tmp_path, monkeypatch
) -> None:
    import pvdm.metrics.sources as sources
    from pvdm.data import center_crop_resize, read_video
    from pvdm.data.write import write_frame_folder

    gen = torch.Generator().manual_seed(3)
    video = torch.randint(0, 256, (3, 9, 30, 44), generator=gen, dtype=torch.uint8)  # not square
    write_frame_folder(tmp_path / "fake" / "v", video)
    decoded = []

    def spy(*args, **kwargs):
        decoded.append(read_video(*args, **kwargs))
        return decoded[-1]

    monkeypatch.setattr(sources, "read_video", spy)
    fake = FolderVideos.open(tmp_path / "fake")
    (got, _), *_ = fake.batches(_protocol(1, 16, stride=2, frames=4), 1)
    assert [tuple(v.shape) for v in decoded] == [(3, 4, 16, 16)]  # never the file's 30x44
    full = video[:, 0:7:2]  # frames 0, 2, 4, 6
    want = center_crop_resize(rearrange(full, "c t h w -> t h w c"), 16)
    assert torch.equal(got[0], want)  # FVD inputs unchanged: the old decode-then-resize


class _SeededPipeline:
    """Stands in for PVDMPipeline: video k is noise drawn from seeds[k] alone."""

    def __init__(self, resolution: int = 24) -> None:
        self.autoencoder = SimpleNamespace(config=SimpleNamespace(resolution=resolution))
        self.schedule = SimpleNamespace(num_timesteps=1000)
        self.calls: list[dict] = []

    def resolve(self, request=None, **fields):
        return (request or SamplingConfig()).replace(**fields).validate(1000, 4)

    def __call__(self, request=None, /, *, progress=True, **fields) -> torch.Tensor:
        request = self.resolve(request, **fields)
        self.calls.append({**request.record(), "progress": progress})
        frames, seeds = request.frames, request.seed_list
        videos = [
            torch.randint(0, 256, (3, frames, 24, 24), generator=torch.Generator().manual_seed(s))
            for s in seeds
        ]
        return torch.stack(videos).to(torch.uint8)


def test_generated_sample_i_uses_seed_base_plus_i_whatever_the_batches_and_ranks() -> None:
    pipe = _SeededPipeline()
    request = SamplingConfig(sampler="ddim", steps=7, eta=0.5)
    source = GeneratedVideos(pipe, model="m", request=request, seed=100)
    protocol = _protocol(5, 24, stride=2, frames=4)  # 4 frames every 2nd: generate 7
    assert source.native_resolution() == 24
    whole = list(source.batches(protocol, 2))
    assert [c["seeds"] for c in pipe.calls] == [[100, 101], [102, 103], [104]]
    assert all(c["frames"] == 7 and c["steps"] == 7 and c["eta"] == 0.5 for c in pipe.calls)
    assert all(c["sampler"] == "ddim" and c["progress"] is False for c in pipe.calls)
    videos = torch.cat([v for v, _ in whole])
    assert videos.shape == (5, 3, 4, 24, 24)
    one = pipe(frames=7, seeds=[103])[0]
    assert torch.equal(videos[3], one[:, ::2])  # sample 3 is seed 103's video, strided
    for rank in (0, 1):  # another batch size and two ranks: the same samples
        got = list(source.batches(protocol, 3, rank=rank, world_size=2))
        assert torch.cat([i for _, i in got]).tolist() == shard(5, rank, 2)
        assert torch.equal(torch.cat([v for v, _ in got]), videos[rank::2])
    (small, _), *_ = source.batches(_protocol(1, 16, frames=4), 1)
    assert small.shape == (1, 3, 4, 16, 16)  # resized to the protocol's resolution
    assert source.describe(protocol)["seeds"] == [100, 104]
    assert GeneratedVideos(pipe, model="m").seed_base(protocol) == protocol.seed
    reported = GeneratedVideos(pipe, model="m").request.record()
    assert (reported["sampler"], reported["steps"], reported["eta"]) == ("ddim", 400, 1.0)
