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
from pvdm.diffusion.pipeline import PVDMPipeline
from pvdm.errors import DataError, PvdmError
from pvdm.serve.model_card import model_card
from pvdm.serve.studio import Cancelled, Limits, Studio


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture(scope="module")
def pipe(run) -> PVDMPipeline:
    return PVDMPipeline.from_pretrained(run)


@pytest.fixture
def studio(pipe, tmp_path) -> Studio:
    return Studio(pipe, tmp_path / "out")


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def _as_mp4(video: torch.Tensor, path: Path) -> torch.Tensor:
    """`video` through the same mp4 writer and reader (H.264 4:2:0 blurs a 16x16 noisy video)."""
    write_video(path, video, fps=8)
    return read_video(path)


def test_sample_writes_the_pipelines_videos(studio, pipe, tmp_path) -> None:
    result = studio.sample(2, 10, sampler="ddim", steps=3, seed=5)
    assert [p.name for p in result.videos] == ["sample-5.mp4", "sample-6.mp4"]
    assert result.info["seeds"] == [5, 6] and result.info["frames"] == 10
    assert result.info["clips_per_video"] == 3 and result.info["seconds"] >= 0
    videos = pipe(2, 10, seeds=[5, 6], sampler="ddim", steps=3, progress=False)
    expected = [_as_mp4(v, tmp_path / f"{i}.mp4") for i, v in enumerate(videos)]
    got = [read_video(p) for p in result.videos]
    assert all(v.shape == (3, 10, 16, 16) for v in got)
    assert _diff(got[0], expected[0]) < 0.5 and _diff(got[1], expected[1]) < 0.5
    assert _diff(got[0], expected[1]) > 5.0  # the other seed's video is far away
    saved = json.loads((result.videos[0].parent / "settings.json").read_text())
    assert saved == result.info


def test_defaults_are_one_clip_with_the_fast_solver(studio) -> None:
    result = studio.sample()
    assert result.info["sampler"] == "dpm" and result.info["steps"] == 20
    assert read_video(result.videos[0]).shape[1] == studio.clip_frames == 4


def test_progress_follows_steps_and_clips(studio) -> None:
    seen: list[tuple[float, str]] = []
    # 3 clips of 3 DDIM steps; frame guidance doubles the evaluations of clips 2 and 3
    studio.sample(
        1, 12, sampler="ddim", steps=3, guidance=1.0, progress=lambda f, d: seen.append((f, d))
    )
    fractions = [f for f, _ in seen]
    assert len(seen) == 1 + 3 + 6 + 6 and fractions[-1] == pytest.approx(1.0)
    assert fractions == sorted(fractions) and fractions[0] == 0.0
    assert [d for _, d in seen[1:]] == ["clip 1/3"] * 3 + ["clip 2/3"] * 6 + ["clip 3/3"] * 6


def test_class_guidance_counts_in_progress(studio) -> None:
    seen: list[float] = []
    result = studio.sample(
        1, 4, sampler="dpm", steps=4, label="square", class_guidance=2.0,
        progress=lambda f, d: seen.append(f),
    )  # fmt: skip
    assert result.info["class"] == "square" and len(seen) == 1 + 8 and seen[-1] == 1.0
    with pytest.raises(PvdmError, match="unknown class"):
        studio.sample(label="hexagon")


def test_cancel_stops_the_job_and_the_next_job_runs(studio) -> None:
    def cancel_after_two(fraction: float, desc: str) -> None:
        if fraction > 0.01:
            studio.cancel()

    calls_before = len(list(studio.out_dir.glob("job-*")))
    with pytest.raises(Cancelled):
        studio.sample(1, 8, sampler="ddim", steps=50, progress=cancel_after_two)
    assert len(list(studio.out_dir.glob("job-*"))) == calls_before  # its folder is removed
    assert studio.sample(sampler="dpm", steps=2).info["frames"] == 4


def test_one_job_at_a_time(studio) -> None:
    order: list[str] = []

    def job(name: str) -> None:
        studio.sample(1, 8, sampler="ddim", steps=10, progress=lambda f, d: order.append(name))

    threads = [threading.Thread(target=job, args=(name,)) for name in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(order) == 2 * (1 + 2 * 10)
    first = order[0]
    assert order == [first] * 21 + [("b" if first == "a" else "a")] * 21  # never interleaved


def test_continue_an_avi_upload(studio, pipe, tmp_path) -> None:
    upload = video_file(tmp_path / "mine.avi", 10)
    result = studio.continue_video(upload, 8, sampler="ddim", steps=3, seed=3)
    given, full = (read_video(p) for p in result.videos)
    assert given.shape == (3, 10, 16, 16) and full.shape == (3, 18, 16, 16)
    assert result.info["upload_frames"] == 10 and result.info["generated_frames"] == 8
    # the given video comes first (what was written is re-read, so compare through the codec)
    assert _diff(full[:, :10], given) < 2.0
    upload_at_model_size = center_crop_resize(
        rearrange(read_video(upload), "c t h w -> t h w c"), 16
    )
    generated = pipe(
        1, 8, seeds=[3], sampler="ddim", steps=3, context=upload_at_model_size[None], progress=False
    )
    expected = _as_mp4(torch.cat([upload_at_model_size, generated[0]], dim=1), tmp_path / "e.mp4")
    assert _diff(full, expected) < 0.5


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
        studio.continue_video(path, 4, steps=2)
    assert not list((tmp_path / "out").glob("job-*"))


def test_requests_beyond_the_limits_are_refused(studio) -> None:
    with pytest.raises(PvdmError, match=r"number of videos must be 1\.\.8"):
        studio.sample(9)
    with pytest.raises(PvdmError, match=r"frames must be 1\.\.512"):
        studio.sample(1, 513)
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
    (run / "quality-ladder.jsonl").write_text(
        json.dumps({"rung": "debug", "fvd": 900.0})
        + "\n"
        + json.dumps({"rung": "ucf", "fvd": 300.0})
    )
    card = model_card(pipe, run)
    assert "| training steps | 2 |" in card
    assert "| classes | 3: circle, square, triangle |" in card
    assert "4 frames per clip at 16x16" in card
    assert "| fvd2048_16f | fvd2048_16f 123.5 | 2048 / 2048 |" in card
    assert "| rung | fvd |" in card and "| ucf | 300 |" in card
    for name in ("metric-fvd2048_16f.jsonl", "quality-ladder.jsonl"):
        (run / name).unlink()
    assert "No `metric-*.jsonl` results" in model_card(pipe, run)


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
