"""The work behind `pvdm serve`, without the web layer: videos as the pipeline makes them,
progress that follows the sampler's steps and clips, cancel, bad uploads, the model card."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from einops import rearrange
from serve_helpers import tiny_run, video_file

from pvdm.data import center_crop_resize, read_video, write_video
from pvdm.diffusion import DEFAULT_SAMPLER, SAMPLERS, NoiseSchedule, SamplingConfig
from pvdm.diffusion.pipeline import PIPELINE_FILE, PVDMPipeline
from pvdm.errors import DataError, PvdmError
from pvdm.serve.model_card import model_card
from pvdm.serve.studio import OUT_MARKER, Cancelled, Limits, Studio


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture(scope="module")
def pipe(run) -> PVDMPipeline:
    return PVDMPipeline.from_pretrained(run)


@pytest.fixture
def studio(pipe, tmp_path) -> Studio:
    studio = Studio(pipe, tmp_path / "out")
    yield studio
    studio.close()


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


# Mean |difference| in uint8 levels between two mp4s of the same video. The H.264 encoder's
# decisions follow the pixels: a +-1 change in 1% of them moves the decoded video by ~0.3
# levels, and a float difference upstream (another CPU, another thread count) by up to ~1.2.
# Another seed's video is ~8 levels away, so 2.5 still tells the right video from a wrong one.
SAME_VIDEO = 2.5
OTHER_SEED = 5.0


def _as_mp4(video: torch.Tensor, path: Path) -> torch.Tensor:
    """`video` through the same mp4 writer and reader (H.264 4:2:0 blurs a 16x16 noisy video)."""
    write_video(path, video, fps=8)
    return read_video(path)


def test_sample_writes_the_pipelines_videos(studio, pipe, tmp_path) -> None:
    result = studio.sample(num=2, frames=10, sampler="ddim", steps=3, seed=5)
    assert [p.name for p in result.videos] == ["sample-5.mp4", "sample-6.mp4"]
    assert result.info["seeds"] == [5, 6] and result.info["frames"] == 10
    assert result.info["clips_per_video"] == 3 and result.info["seconds"] >= 0
    videos = pipe(frames=10, seeds=[5, 6], sampler="ddim", steps=3, progress=False)
    expected = [_as_mp4(v, tmp_path / f"{i}.mp4") for i, v in enumerate(videos)]
    got = [read_video(p) for p in result.videos]
    assert all(v.shape == (3, 10, 16, 16) for v in got)
    assert _diff(got[0], expected[0]) < SAME_VIDEO and _diff(got[1], expected[1]) < SAME_VIDEO
    assert _diff(got[0], expected[1]) > OTHER_SEED
    saved = json.loads((result.videos[0].parent / "settings.json").read_text())
    assert saved == result.info


def test_defaults_are_one_clip_with_the_pipelines_default_sampling(studio) -> None:
    result = studio.sample()
    default = SamplingConfig()
    steps = SAMPLERS[DEFAULT_SAMPLER].default_steps
    assert studio.pipe.schedule.num_timesteps > steps
    assert result.info["sampler"] == DEFAULT_SAMPLER and default.sampler is None
    assert result.info["steps"] == steps and result.info["seeds"] == [0]
    assert read_video(result.videos[0]).shape[1] == studio.clip_frames == 4
    assert studio.default_steps("ddim") == SAMPLERS["ddim"].default_steps
    assert studio.default_steps("ddpm") == studio.pipe.schedule.num_timesteps


def test_default_steps_are_capped_at_a_short_schedule(pipe, tmp_path) -> None:
    """A model trained with 12 timesteps: dpm's default 20 would be out of range."""
    short = PVDMPipeline(pipe.unet, pipe.autoencoder, NoiseSchedule(12), pipe.classes)
    studio = Studio(short, tmp_path / "out")
    assert studio.default_steps("ddim") == SAMPLERS["ddim"].default_steps == 8
    assert studio.default_steps("dpm") == 12 and studio.default_steps("ddpm") == 12
    with pytest.raises(PvdmError, match=r"steps must lie in \[1, 12\]"):
        studio.sample(sampler="ddim", steps=13)
    with pytest.raises(PvdmError, match="runs all 12 steps"):
        studio.sample(sampler="ddpm", steps=7)


def test_progress_follows_steps_and_clips(studio) -> None:
    seen: list[tuple[float, str]] = []
    # 3 clips of 3 DDIM steps (frame guidance doubles the evaluations of clips 2 and 3)
    studio.sample(
        frames=12, sampler="ddim", steps=3, guidance=1.0, progress=lambda f, d: seen.append((f, d))
    )
    fractions = [f for f, _ in seen]
    assert len(seen) == 1 + 3 + 3 + 3 and fractions[-1] == pytest.approx(1.0)
    assert fractions == [0.0, *(pytest.approx(i / 9) for i in range(1, 10))]
    assert [d for _, d in seen[1:]] == ["clip 1/3"] * 3 + ["clip 2/3"] * 3 + ["clip 3/3"] * 3


def test_class_guidance_counts_in_progress(studio) -> None:
    seen: list[float] = []
    result = studio.sample(
        frames=4, sampler="dpm", steps=4, labels="square", class_guidance=2.0,
        progress=lambda f, d: seen.append(f),
    )  # fmt: skip
    assert result.info["class"] == "square" and result.info["class_guidance"] == 2.0
    assert len(seen) == 1 + 4 and seen[-1] == 1.0
    with pytest.raises(PvdmError, match="unknown class"):
        studio.sample(labels="hexagon")


def test_cancel_stops_the_job_and_the_next_job_runs(studio) -> None:
    def cancel_after_two(fraction: float, desc: str) -> None:
        if fraction > 0.01:
            studio.cancel()

    calls_before = len(list(studio.out_dir.glob("job-*")))
    with pytest.raises(Cancelled):
        studio.sample(frames=8, sampler="ddim", steps=50, progress=cancel_after_two)
    assert len(list(studio.out_dir.glob("job-*"))) == calls_before  # its folder is removed
    assert studio.sample(sampler="dpm", steps=2).info["frames"] == 4


def test_only_the_owners_cancel_stops_a_job(studio) -> None:
    refused: list[bool] = []

    def others_cancel(fraction: float, desc: str) -> None:
        refused.append(studio.cancel("someone else"))

    result = studio.sample(frames=8, steps=3, progress=others_cancel, owner="me")
    assert result.info["frames"] == 8 and len(refused) == 1 + 6 and not any(refused)
    assert studio.cancel("me") is False  # nothing runs now: nothing to cancel

    def own_cancel(fraction: float, desc: str) -> None:
        assert studio.cancel("me") is True

    with pytest.raises(Cancelled):
        studio.sample(frames=8, steps=3, progress=own_cancel, owner="me")


def test_two_studios_cannot_share_an_output_folder(pipe, tmp_path) -> None:
    first = Studio(pipe, tmp_path / "out")
    with pytest.raises(PvdmError, match="in use by another pvdm process"):
        Studio(pipe, tmp_path / "out")
    first.close()
    Studio(pipe, tmp_path / "out").close()  # free again


def test_one_job_at_a_time(studio) -> None:
    order: list[str] = []

    def job(name: str) -> None:
        studio.sample(frames=8, sampler="ddim", steps=10, progress=lambda f, d: order.append(name))

    threads = [threading.Thread(target=job, args=(name,)) for name in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(order) == 2 * (1 + 2 * 10)  # the start, then 10 steps of each of 2 clips
    first = order[0]
    assert order == [first] * 21 + [("b" if first == "a" else "a")] * 21  # never interleaved


def test_continue_an_avi_upload(studio, pipe, tmp_path) -> None:
    upload = video_file(tmp_path / "mine.avi", 10)
    result = studio.continue_video(upload, frames=8, sampler="ddim", steps=3, seed=3)
    given, full = (read_video(p) for p in result.videos)
    assert given.shape == (3, 10, 16, 16) and full.shape == (3, 18, 16, 16)
    assert result.info["upload_frames"] == 10 and result.info["generated_frames"] == 8
    # the given video comes first (what was written is re-read, so compare through the codec)
    assert _diff(full[:, :10], given) < 2.0
    upload_at_model_size = center_crop_resize(
        rearrange(read_video(upload), "c t h w -> t h w c"), 16
    )
    generated = pipe(
        frames=8,
        seeds=[3, 4],
        sampler="ddim",
        steps=3,
        context=upload_at_model_size[None].expand(2, -1, -1, -1, -1),
        progress=False,
    )
    expected, other = (
        _as_mp4(torch.cat([upload_at_model_size, v], dim=1), tmp_path / f"e{i}.mp4")
        for i, v in enumerate(generated)
    )
    assert _diff(full, expected) < SAME_VIDEO and _diff(full, other) > OTHER_SEED


def test_an_upload_is_decoded_at_the_models_resolution(studio, tmp_path, monkeypatch) -> None:
    """Bounded memory: no frame of a large upload is held at its own size."""
    import pvdm.data.dataset as dataset

    decoded: list[tuple[int, ...]] = []
    read_frames = dataset.read_frames

    def spy(*args, **kwargs):
        frames = read_frames(*args, **kwargs)
        decoded.append(frames.shape)
        return frames

    monkeypatch.setattr(dataset, "read_frames", spy)
    upload = video_file(tmp_path / "big.mp4", 6, size=96)
    video, total = studio._read_upload(upload)
    assert total == 6 and video.shape == (3, 6, 16, 16) and video.dtype == torch.uint8
    assert decoded and all(shape[1:3] == (16, 16) for shape in decoded)
    monkeypatch.setattr(dataset, "read_frames", read_frames)
    at_size = center_crop_resize(rearrange(read_video(upload), "c t h w -> t h w c"), 16)
    assert _diff(video, at_size) < 1.0  # the same crop and resize as the data layer


def test_out_must_be_new_empty_or_made_by_serve(pipe, tmp_path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "job-1").mkdir()
    with pytest.raises(PvdmError, match="pvdm serve did not write"):
        Studio(pipe, mine)
    assert (mine / "job-1").is_dir() and not (mine / OUT_MARKER).exists()
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "new" / "videos", tmp_path / "empty"):
        studio = Studio(pipe, folder)
        studio.sample(steps=1)
        studio.close()
        assert (folder / OUT_MARKER).is_file()
        Studio(pipe, folder).close()  # serve's own folder, with its jobs, is taken again
    (tmp_path / "file").write_text("x")
    with pytest.raises(PvdmError, match="is a file"):
        Studio(pipe, tmp_path / "file")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x00not a video" * 64) and p, "cannot read the uploaded video"),
        (lambda p: video_file(p, 2), "has 2 frames; continuing needs at least 4"),
        (lambda p: video_file(p, 40), "too large"),
    ],
    ids=["corrupt", "too-short", "too-long"],
)
def test_bad_uploads_get_one_clear_message(pipe, tmp_path, make, message) -> None:
    studio = Studio(pipe, tmp_path / "out", limits=Limits(max_upload_frames=32))
    path = make(tmp_path / "upload.mp4")
    with pytest.raises(DataError, match=message):
        studio.continue_video(path, frames=4, steps=2)
    assert not list((tmp_path / "out").glob("job-*"))


def test_requests_beyond_the_limits_are_refused(studio) -> None:
    with pytest.raises(PvdmError, match=r"number of videos must be 1\.\.8"):
        studio.sample(num=9)
    with pytest.raises(PvdmError, match=r"frames must be 1\.\.512"):
        studio.sample(frames=513)
    with pytest.raises(PvdmError, match="unknown sampler"):
        studio.sample(sampler="euler")


def test_old_job_folders_are_pruned(pipe, tmp_path) -> None:
    studio = Studio(pipe, tmp_path / "out", limits=Limits(keep_jobs=2))
    names = [studio.sample(steps=1).videos[0].parent.name for _ in range(4)]
    assert sorted(p.name for p in (tmp_path / "out").glob("job-*")) == names[-2:]


def test_model_card_shows_training_classes_and_results(pipe, run) -> None:
    record = {
        "metric": "fvd2048_16f", "results": {"fvd2048_16f": 123.456}, "num_real": 2048,
        "num_fake": 2048, "date": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    (run / "metric-fvd2048_16f.jsonl").write_text("not json\n" + json.dumps(record) + "\n")
    (run / "metric-broken.jsonl").mkdir()  # unreadable (OSError): left out, no crash
    card = model_card(pipe, run)
    assert "| training steps | 2 |" in card
    assert "| classes | 3: circle, square, triangle |" in card
    assert "4 frames per clip at 16x16" in card
    assert "| fvd2048_16f | fvd2048_16f 123.5 | 2048 / 2048 |" in card
    assert "broken" not in card and "FVD ladder" not in card
    assert f"from `{json.loads((run / PIPELINE_FILE).read_text())['autoencoder']}`" in card
    (run / "metric-fvd2048_16f.jsonl").unlink()
    (run / "metric-broken.jsonl").rmdir()
    assert "No `metric-*.jsonl` results" in model_card(pipe, run)


def test_model_card_skips_a_results_file_it_cannot_read(pipe, run, monkeypatch) -> None:
    """An OSError (permissions, a vanished file) on a metric-*.jsonl leaves that metric out."""
    locked = run / "metric-locked.jsonl"
    locked.write_text(json.dumps({"metric": "locked", "results": {"locked": 1.0}}) + "\n")
    read_bytes, read_text = Path.read_bytes, Path.read_text

    def refuse(read):
        def wrapped(self, *args, **kwargs):
            if self.name == locked.name:
                raise PermissionError(13, "Permission denied", str(self))
            return read(self, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(Path, "read_bytes", refuse(read_bytes))
    monkeypatch.setattr(Path, "read_text", refuse(read_text))
    try:
        card = model_card(pipe, run)
    finally:
        locked.unlink()
    assert "| training steps | 2 |" in card and "| locked |" not in card


@pytest.mark.parametrize("spec", ["[1, 2]", "not json", '{"unet": 3}'])
def test_model_card_of_a_folder_with_a_bad_pipeline_json(pipe, tmp_path, spec) -> None:
    (tmp_path / PIPELINE_FILE).write_text(spec)
    card = model_card(pipe, tmp_path)
    assert "| autoencoder |" in card and "from `?`" in card


def _features(videos: torch.Tensor) -> torch.Tensor:
    """A stand-in detector: 4 numbers per video (FVD needs only features)."""
    return videos.float().flatten(1)[:, :4] / 255


def test_model_card_shows_the_ladder_of_quality_py(pipe, tmp_path) -> None:
    """benchmarks/quality.py's report: rungs a list of records ({name, group, fvd, num, ...})."""
    from pvdm.metrics.ladder import FLOOR
    from pvdm.metrics.stats import frechet_distance

    gen = torch.Generator().manual_seed(0)
    real, fake = (torch.randint(0, 256, (6, 3, 2, 4, 4), generator=gen) for _ in range(2))
    ref = _features(real)
    rungs = [
        {"name": FLOOR, "group": "floor", "fvd": float(frechet_distance(ref, ref, ddof=0)),
         "num": 6, "split": "test", "seconds": 0.1},
        {"name": "autoencoder reconstructions (rFVD)", "group": "autoencoder",
         "fvd": float(frechet_distance(ref, _features(fake), ddof=0)), "num": 6,
         "psnr_db": 31.25, "ssim": 0.875, "seconds": 0.2},
    ]  # fmt: skip
    report = {
        "benchmark": "quality", "detector": {"name": "i3d_k400", "path": None, "sha256": None},
        "rungs": rungs, "drift": {"window_frames": 16, "num_videos": 2, "fvd": [400.0, 512.5]},
    }  # fmt: skip
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "quality-ladder.json").write_text(json.dumps(report, indent=2))
    for folder in (tmp_path / "runs", tmp_path / "runs" / "sky-dm"):  # the run or its parent
        card = model_card(pipe, folder)
        assert "#### FVD ladder (`runs/quality-ladder.json`)" in card
        assert "Detector: `i3d_k400`." in card
        assert f"| {FLOOR} | {_num(rungs[0]['fvd'])} | 6 |  |  |" in card
        assert (
            f"| autoencoder reconstructions (rFVD) | {_num(rungs[1]['fvd'])} | 6 | 31.25 | 0.875 |"
            in card
        )
        assert "window along long videos): 400, 512.5" in card


def test_model_card_shows_the_ladder_of_a_demo(pipe, tmp_path) -> None:
    """`pvdm demo`: demo.json's metrics.fvd, rungs from pvdm.metrics.ladder.fvd_ladder."""
    from pvdm.demo.run import DemoState, _save_state
    from pvdm.metrics.ladder import FLOOR, fvd_ladder

    gen = torch.Generator().manual_seed(0)
    real, fake = (torch.randint(0, 256, (5, 3, 2, 4, 4), generator=gen) for _ in range(2))
    ladder = fvd_ladder(_features(real), _features, {FLOOR: real, "generated": fake})
    fvd = {
        "detector": {"name": "i3d_k400"}, "num_per_rung": 5, "rungs": ladder,
        "drift": {"window_frames": 16, "num_videos": 2, "fvd": [7.5]},
    }  # fmt: skip
    _save_state(tmp_path, DemoState(metrics={"fvd": fvd, "generation_seconds": {}}))
    (tmp_path / "diffusion").mkdir()
    card = model_card(pipe, tmp_path / "diffusion")
    assert f"#### FVD ladder (`{tmp_path.name}/demo.json`)" in card
    assert f"| generated | {_num(ladder['generated']['fvd'])} | 5 |  |  |" in card
    assert f"| {FLOOR} | {_num(ladder[FLOOR]['fvd'])} | 5 |" in card
    assert "window along long videos): 7.5" in card
    (tmp_path / "other").mkdir()
    assert "FVD ladder" not in model_card(pipe, tmp_path / "other")  # not the demo's model
    _save_state(tmp_path, DemoState(metrics={"fvd": {"skipped": "no I3D detector"}}))
    assert "FVD ladder" not in model_card(pipe, tmp_path / "diffusion")


def _num(value: float) -> str:
    return f"{value:.4g}"


def test_a_converted_official_checkpoint_is_served(tmp_path) -> None:
    """`pvdm convert official` output (small golden weights) samples and has a model card."""
    import yaml
    from safetensors.torch import load_file

    from pvdm.cli import main

    golden = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden" / "official"
    if not (golden / "unet_small.safetensors").is_file():
        pytest.skip(f"golden official weights absent: {golden}")
    configs = json.loads((golden / "configs.json").read_text())["configs"]
    ae = configs["autoencoder_small"]
    blocks = {
        "autoencoder": {
            "model": {"params": {"embed_dim": ae["embed_dim"], "ddconfig": ae["ddconfig"]}}
        },
        "unet": {"model": {"params": {"unet_config": configs["unet_small"]}}},
    }
    args = ["convert", "official", "--out", str(tmp_path / "official")]
    for kind, flag in (("autoencoder", "--autoencoder"), ("unet", "--unet")):
        state = load_file(golden / f"{kind}_small.safetensors")
        pth = tmp_path / f"{kind}.pth"
        torch.save({k[6:]: v.float() for k, v in state.items() if k.startswith("state.")}, pth)
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump(blocks[kind]))
        config_flag = "--ae-config" if kind == "autoencoder" else "--unet-config"
        args += [flag, str(pth), config_flag, str(tmp_path / f"{kind}.yaml")]
    assert main(args) == 0
    pipe = PVDMPipeline.from_pretrained(tmp_path / "official")
    result = Studio(pipe, tmp_path / "out").sample(steps=2)
    video = read_video(result.videos[0])
    assert video.shape[1] == pipe.clip_frames == 16
    card = model_card(pipe, tmp_path / "official")
    assert "| classes | none (unconditional) |" in card and "training steps" not in card
    assert f"16 frames per clip at {pipe.autoencoder.config.resolution}x" in card
