"""Autoencoder training: the GAN phase with LPIPS, non-finite steps, the held-out guard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_lpips_model import LIN_FILE, random_vgg16_state
from train_helpers import TINY_AE

import pvdm.train.autoencoder as ae_train
from pvdm.config import apply_overrides
from pvdm.errors import PvdmError, WeightsError
from pvdm.presets import AUTOENCODER_RUNS


def _cfg(*extra: str):
    return apply_overrides(AUTOENCODER_RUNS["debug"](), [*TINY_AE, *extra])


def _stats(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    if not LIN_FILE.is_file():
        pytest.skip(f"shared LPIPS weights absent: {LIN_FILE}")
    path = tmp_path_factory.mktemp("weights") / "vgg16-397923af.pth"
    torch.save(random_vgg16_state(), path)
    return path


def test_gan_phase_with_lpips_trains_both_players(tmp_path, vgg_file) -> None:
    cfg = _cfg(
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "loss.perceptual_weight=4.0",
        f"loss.vgg_weights={vgg_file}",
        f"loss.lpips_weights={LIN_FILE}",
        "loss.disc_start=2",
        "loss.disc_ndf=8",
    )
    run = ae_train.train_autoencoder(cfg, tmp_path / "run")
    rows = {r["step"]: r for r in _stats(run) if "l1" in r}
    assert set(rows) == {1, 2, 3, 4}
    assert (
        "d_loss" not in rows[2] and "g_adv" not in rows[2]
    )  # discriminators off before disc_start
    assert rows[3]["d_loss"] > 0 and "feature_match" in rows[4] and rows[4]["lpips"] > 0
    before = torch.load(run / "checkpoints" / "state-00000002.pt", weights_only=True)
    after = torch.load(run / "checkpoints" / "state-00000004.pt", weights_only=True)
    for part in ("discriminators", "model"):  # both players were updated in steps 3 and 4
        moved = max(
            float((after[part][k].float() - v.float()).abs().max()) for k, v in before[part].items()
        )
        assert moved > 0, part
    assert all(math.isfinite(r.get("d_loss", 0.0)) for r in rows.values())


def test_missing_vgg_file_is_one_clear_error(tmp_path) -> None:
    cfg = _cfg("loss.perceptual_weight=4.0", f"loss.vgg_weights={tmp_path / 'nope.pth'}")
    with pytest.raises(WeightsError, match=r"nope\.pth"):
        ae_train.train_autoencoder(cfg, tmp_path / "run")


def test_nonfinite_steps_are_skipped_then_stop(tmp_path, monkeypatch) -> None:
    # the seam is the one optimizer update per step, keyed by the step (not by counting calls):
    # step 2 reports a NaN loss, steps 4.. get NaN gradients
    class PoisonedUpdate(ae_train.GuardedUpdate):
        def __call__(self, opt, scaler, params, grad_clip, loss, step, monitor):
            if step == 2:
                loss = float("nan")
            if step >= 4:
                for p in params:
                    if p.grad is not None:
                        p.grad.fill_(float("nan"))
            return super().__call__(opt, scaler, params, grad_clip, loss, step, monitor)

    monkeypatch.setattr(ae_train, "GuardedUpdate", PoisonedUpdate)
    cfg = _cfg("train.max_steps=20", "train.checkpoint_every=2", "train.max_nonfinite=3")
    # the isolated NaN step 2 is skipped and the count restarts, so the stop comes at step 6
    with pytest.raises(PvdmError, match=r"3 non-finite steps in a row at step 6;"):
        ae_train.train_autoencoder(cfg, tmp_path / "run")
    rows = [r for r in _stats(tmp_path / "run") if "skipped_nonfinite" in r]
    assert rows, "skipped steps were not logged"
    states = sorted((tmp_path / "run" / "checkpoints").glob("state-*.pt"))
    last = torch.load(states[-1], weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_guard_keeps_best_and_stops_on_divergence(tmp_path, monkeypatch) -> None:
    scores = iter([10.0, 12.0, 11.5, 9.0, 8.0, 7.0, 6.0])
    monkeypatch.setattr(ae_train, "heldout_psnr", lambda *a, **k: next(scores))
    cfg = _cfg("train.max_steps=40", "train.eval_every=2", "train.checkpoint_every=100")
    run = ae_train.train_autoencoder(cfg, tmp_path / "run")
    evals = [r for r in _stats(run) if "heldout_psnr" in r]
    # evaluations at 0, 2, 4, 6, 8: 9.0 and 8.0 are > 1 dB below the best 12.0 (patience 2)
    assert [r["step"] for r in evals] == [0, 2, 4, 6, 8]
    best = json.loads((run / "snapshots" / "best" / "config.json").read_text())
    assert best["metadata"]["step"] == 2
    assert (run / "checkpoints" / "state-00000008.pt").is_file()  # stopped at 8, saved there


def test_guard_rolls_back_to_the_best_weights(tmp_path, monkeypatch) -> None:
    scores = iter([10.0, 12.0, 9.0, 8.0, 11.0, 9.0, 8.0, 7.0])
    monkeypatch.setattr(ae_train, "heldout_psnr", lambda *a, **k: next(scores))
    loaded = []
    real_load = ae_train.load_training_state
    monkeypatch.setattr(ae_train, "load_training_state", lambda p: loaded.append(p) or real_load(p))
    cfg = _cfg(
        "train.max_steps=40",
        "train.eval_every=2",
        "train.checkpoint_every=100",
        "loss.on_divergence=rollback",
        "loss.max_rollbacks=1",
    )
    run = ae_train.train_autoencoder(cfg, tmp_path / "run")
    assert [p.name for p in loaded] == ["best.pt"]  # one rollback, then a stop
    evals = [r["step"] for r in _stats(run) if "heldout_psnr" in r]
    assert evals == [0, 2, 4, 6, 8, 10, 12]


def test_latent_hinge_penalises_only_saturating_pre_tanh_values() -> None:
    from torch import nn

    from pvdm.train.ae_loss import AutoencoderLossConfig, PreTanhProbe

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_latent = nn.ModuleDict({"hw": nn.Identity(), "tw": nn.Identity()})

    model = Model()
    probe = PreTanhProbe(model, AutoencoderLossConfig(latent_hinge=2.0, latent_hinge_at=1.5))
    model.to_latent["hw"](torch.tensor([0.5, -1.0, 2.5, -3.5]))  # excess 0, 0, 1, 2
    model.to_latent["tw"](torch.tensor([1.4, -1.4]))  # inside the band: no penalty
    penalty = probe.penalty()
    torch.testing.assert_close(penalty, torch.tensor(2.0 * ((0 + 0 + 1 + 4) / 4 + 0) / 2))
    assert probe.penalty() is None  # values are consumed
    model.eval()
    model.to_latent["hw"](torch.tensor([9.0]))  # evaluation passes are not penalised
    assert probe.penalty() is None
    off = PreTanhProbe(Model(), AutoencoderLossConfig())
    assert not off.handles and off.penalty() is None


def test_latent_hinge_enters_the_training_loss(tmp_path) -> None:
    cfg = _cfg("train.max_steps=2", "train.checkpoint_every=2", "loss.latent_hinge=1.0")
    rows = [r for r in _stats(ae_train.train_autoencoder(cfg, tmp_path / "run")) if "l1" in r]
    assert len(rows) == 2 and all(r["latent_hinge"] >= 0 for r in rows)
    for r in rows:
        assert r["g_total"] == pytest.approx(r["l1"] + r["gradient_l1"] + r["latent_hinge"])


def test_gradient_l1_weighs_the_differences_of_neighbouring_pixels() -> None:
    from pvdm.errors import ConfigError
    from pvdm.train.ae_loss import AutoencoderLoss, AutoencoderLossConfig, gradient_l1

    x = torch.zeros(1, 3, 2, 3, 3)
    bump = x.clone()
    bump[0, 0, 0, 1, 1] = 1.0  # one pixel: 1 difference along t, 2 along h, 2 along w
    want = 1 / 27 + 2 / 36 + 2 / 36  # means over the 27 t- and 36 h-, w-differences
    assert gradient_l1(bump, x).item() == pytest.approx(want)
    assert gradient_l1(x + 0.5, x).item() == 0.0  # a constant shift has no edges
    loss = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, gradient_weight=2.0))
    total, logs = loss.generator_loss(x, bump, gan=False)
    assert logs["gradient_l1"] == pytest.approx(2.0 * want)
    assert total.item() == pytest.approx(logs["l1"] + logs["gradient_l1"])
    with pytest.raises(ConfigError, match="gradient_weight"):
        AutoencoderLossConfig(gradient_weight=-1.0).validate()


def test_i3d_feature_term_compares_early_i3d_features() -> None:
    """The not-official I3D term: early features of the (here random) Kinetics-400 I3D on the
    reconstruction against the input, LPIPS-normalised; zero for a perfect reconstruction."""
    from pvdm.errors import ConfigError
    from pvdm.metrics.i3d import InceptionI3d
    from pvdm.train.ae_loss import AutoencoderLoss, AutoencoderLossConfig, I3DFeatures

    torch.manual_seed(0)
    i3d = InceptionI3d()
    features = I3DFeatures(i3d, "Conv3d_2c_3x3")
    assert features.names == ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
    x = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    assert features(x).shape == (2, 192, 4, 8, 8)
    cfg = AutoencoderLossConfig(perceptual_weight=0.0, i3d_weight=2.0)
    loss = AutoencoderLoss(cfg, i3d=features)
    _, logs = loss.generator_loss(x, x.clone(), gan=False)
    assert logs["i3d"] == pytest.approx(0.0, abs=1e-6)
    xrec = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    total, logs = loss.generator_loss(x, xrec, gan=False)
    assert 0.0 < logs["i3d"] <= 2.0 * 4.0  # unit vectors: squared distance at most 4
    assert total.item() == pytest.approx(logs["l1"] + logs["i3d"], rel=1e-5)
    total.backward()
    assert xrec.grad is not None and xrec.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in features.parameters())  # frozen
    with pytest.raises(ConfigError, match="i3d_layer must be one of"):
        I3DFeatures(i3d, "Conv3d_9z")
    with pytest.raises(ConfigError, match="i3d_weight > 0 needs"):
        AutoencoderLoss(cfg)
