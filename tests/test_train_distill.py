"""`pvdm distill`: the student's first step matches the teacher, its grid is the sampler's, it
resumes exactly, and the student folder samples wherever a diffusion model does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import TINY_AE, TINY_DM, run_pvdm, sets

import pvdm.train.diffusion as dm_train
from pvdm.config import apply_overrides
from pvdm.diffusion.pipeline import PVDMPipeline
from pvdm.diffusion.samplers import ddim_sample, ddim_times
from pvdm.diffusion.sampling import DEFAULT_SAMPLER
from pvdm.diffusion.schedule import NoiseSchedule
from pvdm.errors import ConfigError
from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS, DISTILL_RUNS
from pvdm.train.distill import distill, seeded_critic, student_sample

TINY_DISTILL = ["train.batch_size=2", "train.log_every=1", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny diffusion run (3 steps) and its latent cache."""
    from pvdm.models import TriplaneAutoencoder

    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    ae_cfg = apply_overrides(AUTOENCODER_RUNS["debug"](), TINY_AE).model
    TriplaneAutoencoder(ae_cfg).save_pretrained(root / "autoencoder")
    cache = root / "latents"
    run_pvdm(
        "cache-latents", "--autoencoder", str(root / "autoencoder"), "--data", "synthetic",
        "--out", str(cache), "--windows", "2", "--batch-size", "4",
        *sets(["data.synthetic_videos=6", "data.synthetic_frames=12"]),
    )  # fmt: skip
    cfg = apply_overrides(
        DIFFUSION_RUNS["debug"](),
        [
            *TINY_DM, f"autoencoder={root / 'autoencoder'}", "data.resolution=16",
            "data.frames=4", f"data.path={cache}", "train.max_steps=3",
            "train.checkpoint_every=3",
        ],
    )  # fmt: skip
    return dm_train.train_diffusion(cfg, root / "dm"), cache


def _cfg(teacher: Path, cache: Path, *extra: str):
    base = [*TINY_DISTILL, f"teacher={teacher}", f"latents={cache}"]
    return apply_overrides(DISTILL_RUNS["debug"](), [*base, *extra])


def _stats(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def test_a_student_like_its_teacher_gets_no_push_and_its_folder_samples(teacher, tmp_path):
    dm, cache = teacher
    run = distill(_cfg(dm, cache, "train.max_steps=2", "train.checkpoint_every=2"), tmp_path / "s")
    rows = _stats(run)
    # step 0: the fake score is still the teacher, so x0_fake - x0_real is exactly 0
    assert rows[0]["loss"] == 0.0 and rows[0]["fake_loss"] > 0
    assert (run / "snapshots" / "step-00000002" / "model.safetensors").is_file()
    pipe = PVDMPipeline.from_pretrained(run)
    assert pipe.default_steps == {"ddim": 2} and pipe.default_sampler == "ddim"
    # the student's own sampler and step count by default (not the global default's grid)
    assert pipe.resolve().sampler == "ddim" and pipe.resolve().steps == 2
    assert pipe.resolve(steps=5).steps == 5 and pipe.resolve(sampler="dpm").steps == 20
    teacher_pipe = PVDMPipeline.from_pretrained(dm)
    assert teacher_pipe.default_steps == {} and teacher_pipe.resolve().steps == 8
    assert teacher_pipe.resolve().sampler == DEFAULT_SAMPLER
    videos = pipe(num=2, frames=6, seed=0, progress=False)  # two clips: the conditional mode too
    assert videos.shape == (2, 3, 6, 16, 16) and videos.dtype == torch.uint8
    out = tmp_path / "samples"
    run_pvdm("sample", "--model", str(run), "--num", "1", "--out", str(out))
    assert json.loads((out / "settings.json").read_text())["steps"] == 2
    saved = tmp_path / "saved"  # save_pretrained keeps the step count
    pipe.save_pretrained(saved)
    again = PVDMPipeline.from_pretrained(saved).resolve()
    assert (again.sampler, again.steps) == ("ddim", 2)


@pytest.mark.parametrize("gan", [[], ["distill.gan_weight=0.1"]], ids=["dmd", "dmd+gan"])
def test_distillation_resumes_exactly(teacher, tmp_path, gan) -> None:
    dm, cache = teacher
    common = ["train.checkpoint_every=2", *gan]
    full = distill(_cfg(dm, cache, *common, "train.max_steps=4"), tmp_path / "full")
    half = tmp_path / "half"
    distill(_cfg(dm, cache, *common, "train.max_steps=2"), half)
    distill(_cfg(dm, cache, *common, "train.max_steps=4"), half)
    a = torch.load(full / "checkpoints" / "state-00000004.pt", weights_only=True)
    b = torch.load(half / "checkpoints" / "state-00000004.pt", weights_only=True)
    for part in ("model", "optimizer", "fake_optimizer"):
        assert a[part].keys() == b[part].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert any(k.startswith("critic.") for k in a["model"]) == bool(gan)
    assert any(
        not torch.equal(a["model"][k], torch.load(half / "checkpoints" / "state-00000002.pt",
                                                  weights_only=True)["model"][k])
        for k in a["model"] if k.startswith("student.")
    )  # fmt: skip


def test_the_gan_term_is_the_students_only_push_at_the_first_step(teacher, tmp_path) -> None:
    dm, cache = teacher
    cfg = _cfg(dm, cache, "train.max_steps=2", "distill.gan_weight=0.5", "distill.critic_weight=1")
    rows = _stats(distill(cfg, tmp_path / "s"))
    # the fake score is still the teacher at step 0, so the distribution-matching part is 0 and
    # the student's loss is the weighted generator loss: softplus of a finite logit, > 0
    first = rows[0]
    assert first["gen_loss"] > 0 and first["critic_loss"] > 0
    assert first["loss"] == pytest.approx(0.5 * first["gen_loss"], rel=1e-5)
    # the critic learns in the fake updates: its saved weights left their seeded start
    state = torch.load(tmp_path / "s" / "checkpoints" / "state-00000002.pt", weights_only=True)
    start = seeded_critic(PVDMPipeline.from_pretrained(dm).unet, cfg.train.seed).state_dict()
    trained = {k[len("critic.") :]: v for k, v in state["model"].items() if k.startswith("critic.")}
    assert trained.keys() == start.keys()
    assert all(not torch.equal(trained[k], start[k]) for k in start)
    with pytest.raises(ConfigError, match="gan_weight"):
        distill(_cfg(dm, cache, "distill.gan_weight=-1"), tmp_path / "b")
    with pytest.raises(ConfigError, match="fake_updates"):
        distill(_cfg(dm, cache, "distill.gan_weight=1", "distill.fake_updates=0"), tmp_path / "c")


def test_the_one_step_student_is_its_sampler_at_one_step() -> None:
    schedule = NoiseSchedule()
    assert ddim_times(1000, 1) == [999, -1] and ddim_times(1000, 2) == [999, 499, -1]

    class Toy(torch.nn.Module):
        def forward(self, x, t, cond=None, labels=None):
            return 0.3 * x + t.float().reshape(-1, 1) / 1000

    noise = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    x0 = student_sample(Toy(), schedule, ddim_times(1000, 1), noise, {}, 1.0)
    reference = ddim_sample(lambda x, t: Toy()(x, t), noise, schedule, 1, clip_x0=False)
    torch.testing.assert_close(x0, reference)


def test_bad_settings_are_one_error(teacher, tmp_path) -> None:
    dm, cache = teacher
    with pytest.raises(ConfigError, match="--teacher"):
        distill(apply_overrides(DISTILL_RUNS["debug"](), [f"latents={cache}"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="student_steps"):
        distill(_cfg(dm, cache, "distill.student_steps=0"), tmp_path / "b")
    with pytest.raises(ConfigError, match="LATENT_CACHE"):
        distill(_cfg(dm, tmp_path / "nothing"), tmp_path / "c")
    proc = run_pvdm(
        "distill", "--teacher", str(dm), "--outdir", str(tmp_path / "d"), "--workers", "2",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "one process" in proc.stderr
    # from the command line, with the teacher's own latent cache (no --data)
    run_pvdm(
        "distill", "--teacher", str(dm), "--outdir", str(tmp_path / "e"), "--steps", "1",
        "--max-steps", "1", *sets(TINY_DISTILL),
    )  # fmt: skip
    assert PVDMPipeline.from_pretrained(tmp_path / "e").resolve().steps == 1
