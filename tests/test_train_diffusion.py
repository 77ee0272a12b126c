"""Diffusion training: latent cache, cached and encoded training, exact resume, class
conditioning, and sampling from the trained run (short, long, continued videos)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import TINY_AE, TINY_DM, run_pvdm, sets

import pvdm.train.diffusion as dm_train
from pvdm.config import apply_overrides
from pvdm.data import DataConfig, open_dataset, to_model_range
from pvdm.diffusion.cache import LatentCache
from pvdm.diffusion.pipeline import PVDMPipeline
from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS
from pvdm.seeds import mix_seed


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> Path:
    """A tiny randomly initialised autoencoder saved as a snapshot (16x16, 4 frames)."""
    from pvdm.models import TriplaneAutoencoder

    cfg = apply_overrides(AUTOENCODER_RUNS["debug"](), TINY_AE).model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ae") / "autoencoder"
    TriplaneAutoencoder(cfg).save_pretrained(path)
    return path


def _cfg(autoencoder: Path, *extra: str):
    base = [*TINY_DM, f"autoencoder={autoencoder}", "data.resolution=16", "data.frames=4"]
    return apply_overrides(DIFFUSION_RUNS["debug"](), [*base, *extra])


@pytest.fixture(scope="module")
def cache(autoencoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "latents"
    run_pvdm(
        "cache-latents", "--autoencoder", str(autoencoder), "--data", "synthetic",
        "--out", str(out), "--windows", "2", "--batch-size", "4",
        *sets(["data.synthetic_videos=6", "data.synthetic_frames=12"]),
    )  # fmt: skip
    return out


def test_cache_holds_the_latents_of_the_documented_windows(cache, autoencoder) -> None:
    from pvdm.models import load_model

    store = LatentCache(cache)
    manifest = store.manifest
    assert manifest["num_entries"] == len(store) == 6 * 2
    assert manifest["geometry"] == {"channels": 4, "frames": 4, "height": 4, "width": 4}
    # recompute entry (video 3, window 1) by hand
    ae = load_model(autoencoder)
    data = DataConfig(
        path="synthetic", resolution=16, frames=4, synthetic_videos=6, synthetic_frames=12
    )
    dataset = open_dataset(data, clip_frames=8)
    rng = np.random.default_rng(mix_seed("cache", 0, 3, 1))
    start = int(rng.integers(0, 12 - 8 + 1))
    clip = dataset.clip(3, start)
    prefix = int(rng.integers(0, 5))
    entry = store[3 * 2 + 1]
    with torch.no_grad():
        prev = ae.encode(to_model_range(clip[None, :, :4])).pack()[0]
        target = ae.encode(to_model_range(clip[None, :, 4:])).pack()[0]
        uncond = ae.encode(to_model_range(clip[None, :, prefix : prefix + 4])).pack()[0]
    for name, ref in (("prev", prev), ("target", target), ("uncond", uncond)):
        torch.testing.assert_close(entry[name].float(), ref, rtol=0, atol=2e-3, msg=name)
    assert int(entry["video"]) == 3


@pytest.mark.parametrize("source", ["cache", "encoded"])
def test_training_runs_and_the_run_samples(source, cache, autoencoder, tmp_path) -> None:
    data = str(cache) if source == "cache" else "synthetic"
    cfg = _cfg(autoencoder, f"data.path={data}", "train.max_steps=3", "train.checkpoint_every=3")
    run = dm_train.train_diffusion(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert (run / "snapshots" / "step-00000003" / "model.safetensors").is_file()
    assert (run / "autoencoder" / "config.json").is_file()
    out = tmp_path / "samples"
    run_pvdm(
        "sample", "--model", str(run), "--num", "2", "--frames", "10", "--sampler", "dpm",
        "--steps", "2", "--out", str(out),
    )  # fmt: skip
    settings = json.loads((out / "settings.json").read_text())
    assert settings["frames"] == 10 and settings["seeds"] == [0, 1]
    for name in ("sample-0000.mp4", "sample-0001.mp4", "grid.png"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob("*.gif"))  # each video written once
    assert settings["format"] == "mp4" and settings["lossless"] is False


def test_resume_is_exact(cache, autoencoder, tmp_path) -> None:
    # a constant rate: with the preset's decay, a run planned for 3 steps has other rates
    common = [f"data.path={cache}", "train.checkpoint_every=3", "train.lr_decay_frac=0"]
    full = dm_train.train_diffusion(
        _cfg(autoencoder, *common, "train.max_steps=6"), tmp_path / "full"
    )
    half = tmp_path / "half"
    dm_train.train_diffusion(_cfg(autoencoder, *common, "train.max_steps=3"), half)
    dm_train.train_diffusion(_cfg(autoencoder, *common, "train.max_steps=6"), half)
    a = torch.load(full / "checkpoints" / "state-00000006.pt", weights_only=True)
    b = torch.load(half / "checkpoints" / "state-00000006.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k


def test_class_conditional_training_and_sampling(autoencoder, tmp_path) -> None:
    dataset = open_dataset(
        DataConfig(
            path="synthetic", resolution=16, frames=4, synthetic_videos=16, synthetic_frames=12
        )
    )
    num_classes = len(dataset.classes)
    cfg = _cfg(
        autoencoder,
        "train.max_steps=3",
        "train.checkpoint_every=3",
        "train.use_ema=false",  # the EMA of 3 steps is still the zero-initialised output layer
        "train.lr=0.01",
        f"model.num_classes={num_classes}",
    )
    run = dm_train.train_diffusion(cfg, tmp_path / "run")
    pipe = PVDMPipeline.from_pretrained(run)
    assert pipe.classes == dataset.classes
    a = pipe(
        num=2, labels=[dataset.classes[1]], sampler="dpm", steps=2, class_guidance=1.0,
        progress=False,
    )  # fmt: skip
    b = pipe(
        num=2, labels=[dataset.classes[2]], sampler="dpm", steps=2, class_guidance=1.0,
        progress=False,
    )  # fmt: skip
    assert a.shape == (2, 3, 4, 16, 16) and not torch.equal(a, b)


def test_videos_do_not_depend_on_batch_composition(cache, autoencoder, tmp_path) -> None:
    run = dm_train.train_diffusion(
        _cfg(
            autoencoder,
            f"data.path={cache}",
            "train.max_steps=3",
            "train.checkpoint_every=3",
            "train.use_ema=false",
            "train.lr=0.01",
        ),
        tmp_path / "run",
    )
    pipe = PVDMPipeline.from_pretrained(run)
    together = pipe(
        frames=8, seeds=[5, 6, 7], sampler="ddim", steps=3, batch_size=3, progress=False
    )
    alone = pipe(frames=8, seeds=[6], sampler="ddim", steps=3, batch_size=1, progress=False)
    assert together.shape == (3, 3, 8, 16, 16)
    assert (together[1].int() - alone[0].int()).abs().max() <= 1  # uint8 rounding at most
    context = together[:1, :, :4]
    continued = pipe(frames=4, seeds=[9], sampler="ddim", steps=3, context=context, progress=False)
    unconditioned = pipe(frames=4, seeds=[9], sampler="ddim", steps=3, progress=False)
    assert continued.shape == (1, 3, 4, 16, 16) and not torch.equal(continued, unconditioned)


def test_label_dropout_sends_the_configured_share_to_the_null_class() -> None:
    torch.manual_seed(0)
    labels = torch.arange(4000) % 5
    labels[:10] = -1  # unlabelled entries of a latent cache
    dropped = dm_train._drop_labels(labels, 5, 0.25)
    null = dropped == 5
    assert torch.equal(dropped[~null], labels[~null])  # the rest keep their class
    assert null[:10].all()
    assert 0.23 < null[10:].float().mean().item() < 0.27
    assert torch.equal(dm_train._drop_labels(labels[10:], 5, 0.0), labels[10:])
    assert (dm_train._drop_labels(labels, 5, 1.0) == 5).all()
    assert dm_train._drop_labels(labels, None, 0.25) is None


def test_training_drops_labels_with_the_configured_rate(autoencoder, tmp_path, monkeypatch) -> None:
    seen = []
    real = dm_train._drop_labels

    def spy(labels, num_classes, p):
        out = real(labels, num_classes, p)
        seen.append((num_classes, p))
        return out

    monkeypatch.setattr(dm_train, "_drop_labels", spy)
    cfg = _cfg(
        autoencoder,
        "train.max_steps=2",
        "train.checkpoint_every=2",
        "model.num_classes=3",
        "diffusion.class_dropout=0.4",
        "data.synthetic_videos=4",
    )
    dm_train.train_diffusion(cfg, tmp_path / "run")
    assert seen == [(3, 0.4)] * 2  # one call per micro-batch, with the configured rate


def test_min_snr_weights_and_the_weighted_loss() -> None:
    from pvdm.diffusion.schedule import NoiseSchedule, diffusion_loss

    schedule = NoiseSchedule()
    t = torch.tensor([0, 300, 999])
    acp = schedule.alphas_cumprod[t].double()
    snr = acp / (1 - acp)
    weights = schedule.min_snr_weights(t, 5.0)
    assert snr[0] > 5 and snr[2] < 5  # low noise is down-weighted, high noise kept
    torch.testing.assert_close(weights.double(), snr.clamp(max=5.0) / snr, rtol=1e-6, atol=0)
    assert weights[2] == 1.0 and 0 < weights[0] < 0.01
    eps, noise = torch.zeros(3, 2, 4), torch.arange(24.0).view(3, 2, 4) / 10
    per_sample = noise.square().flatten(1).mean(1)
    loss = diffusion_loss(eps, noise, weights=weights)
    torch.testing.assert_close(loss, (per_sample * weights).mean())
    torch.testing.assert_close(diffusion_loss(eps, noise), per_sample.mean())


def test_latent_scale_and_min_snr_reach_the_training_step(
    cache, autoencoder, tmp_path, monkeypatch
) -> None:
    """The UNet trains on latent_scale * latents (the condition too) and pipeline.json says so;
    min_snr_gamma weights the loss."""
    from pvdm.diffusion.schedule import NoiseSchedule

    seen: dict[str, list] = {"x0": [], "cond": [], "weights": []}
    real_q, real_loss = NoiseSchedule.q_sample, dm_train.diffusion_loss

    def q_spy(self, x0, t, noise):
        seen["x0"].append(x0.pack().clone())
        return real_q(self, x0, t, noise)

    def loss_spy(eps, noise, kind="l2", weights=None):
        seen["weights"].append(weights)
        return real_loss(eps, noise, kind, weights)

    monkeypatch.setattr(NoiseSchedule, "q_sample", q_spy)
    monkeypatch.setattr(dm_train, "diffusion_loss", loss_spy)
    common = [f"data.path={cache}", "train.max_steps=2", "train.checkpoint_every=2"]
    common.append("diffusion.cond_prob=1.0")
    plain = dm_train.train_diffusion(
        _cfg(autoencoder, *common, "diffusion.min_snr_gamma=0"), tmp_path / "plain"
    )
    x0_plain, seen["x0"] = seen["x0"], []
    assert seen["weights"] == [None, None]
    scaled = _cfg(autoencoder, *common, "diffusion.latent_scale=2.0", "diffusion.min_snr_gamma=5")
    run = dm_train.train_diffusion(scaled, tmp_path / "scaled")
    for a, b in zip(seen["x0"], x0_plain, strict=True):
        torch.testing.assert_close(a, 2.0 * b)
    assert all(w is not None and w.shape == (len(x0_plain[0]),) for w in seen["weights"][2:])
    assert json.loads((run / "pipeline.json").read_text())["latent_scale"] == 2.0
    assert json.loads((plain / "pipeline.json").read_text())["latent_scale"] == 1.0
    assert PVDMPipeline.from_pretrained(run).latent_scale == 2.0
