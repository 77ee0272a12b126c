"""The demo's FVD ladder and its detector check: rungs, drift curve, budget, report section."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from einops import rearrange

from pvdm.data import DataConfig
from pvdm.demo.report import fvd_section
from pvdm.demo.results import _fvd_ladder
from pvdm.errors import WeightsError
from pvdm.metrics.ladder import FLOOR, FROZEN, NOISE, SHUFFLED
from pvdm.metrics.protocols import Detector


class _Lossless(torch.nn.Module):
    """A lossless "autoencoder" of 8-frame clips."""

    config = SimpleNamespace(frames=8)

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives it a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _cheap_features(videos: torch.Tensor) -> torch.Tensor:
    """Per-frame mean colour and mean absolute frame difference: a stand-in for I3D."""
    x = videos.float() / 255
    colour = rearrange(x.mean(dim=(3, 4)), "b c t -> b (c t)")
    motion = rearrange((x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(3, 4)), "b c t -> b (c t)")
    return torch.cat([colour, motion], dim=1)


def _detector() -> Detector:
    return Detector("cheap", "0" * 64, _cheap_features, info={"source": "test", "bn_eps": None})


def test_ladder_rungs_drift_and_report(tmp_path) -> None:
    data = DataConfig(path="synthetic", resolution=32, frames=16, synthetic_videos=32)
    pipe = SimpleNamespace(clip_frames=8, autoencoder=_Lossless())
    gen = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 256, (8, 3, 16, 32, 32), generator=gen, dtype=torch.uint8)
    long = torch.randint(0, 256, (2, 3, 64, 32, 32), generator=gen, dtype=torch.uint8)
    fvd = _fvd_ladder(
        _detector(), 600.0, pipe, data, samples, long, seed=0, sampling="DDIM-8 eta 1"
    )
    rungs = fvd["rungs"]
    assert fvd["num_per_rung"] == 8 and all(r["num"] == 8 for r in rungs.values())
    # A lossless autoencoder gives the floor (up to the uint8 round trip); noise is far above it.
    assert rungs["autoencoder reconstructions (rFVD)"]["fvd"] == pytest.approx(
        rungs[FLOOR]["fvd"], rel=0.02
    )
    assert (
        rungs[FLOOR]["fvd"] < rungs[SHUFFLED]["fvd"] and rungs[FLOOR]["fvd"] < rungs[FROZEN]["fvd"]
    )
    assert rungs[NOISE]["fvd"] > 3 * rungs[FLOOR]["fvd"]
    # 8 clips per rung: the report reads the kernel distance, which orders the rungs too
    assert fvd["statistic"] == "kid_x1000" and "fewer than the 64" in fvd["note"]
    kid = {name: r["kid_x1000"] for name, r in rungs.items()}
    assert abs(kid["autoencoder reconstructions (rFVD)"] - kid[FLOOR]) < 0.05 * kid[NOISE]
    assert kid[FLOOR] < kid[SHUFFLED] and kid[FLOOR] < kid[FROZEN] < kid[NOISE]
    assert all(r["kid_x1000_spread"] > 0 for r in rungs.values())
    assert len(fvd["drift"]["kid_x1000"]) == 4 and fvd["drift"]["window_frames"] == 16
    html = fvd_section(fvd)
    assert "Quality ladder (KID x 1000)" in html and FLOOR in html and "<polyline" in html
    assert f"{rungs[FLOOR]['kid_x1000']:.1f} &plusmn;" in html


def test_ladder_is_skipped_when_the_budget_is_too_small() -> None:
    samples = torch.zeros(8, 3, 16, 32, 32, dtype=torch.uint8)
    out = _fvd_ladder(
        _detector(), 3.0, None, None, samples, samples, seed=0, sampling="DDIM-8 eta 1"
    )
    assert "skipped" in out and "time budget" in out["skipped"]
    assert fvd_section(out) == ""


def test_demo_checks_its_detector_before_training(tmp_path) -> None:
    from pvdm.demo.run import run_demo

    with pytest.raises(WeightsError, match="not found"):
        run_demo(tmp_path / "demo", minutes=0.1, i3d=str(tmp_path / "missing.pt"))
    assert not (tmp_path / "demo").exists()  # nothing trained, nothing written


def test_ladder_with_fewer_held_out_videos_than_clips_per_rung(tmp_path) -> None:
    from pvdm.data import write_video

    gen = torch.Generator().manual_seed(1)
    for split, count in (("train", 8), ("test", 3)):
        for i in range(count):
            video = torch.randint(0, 256, (3, 16, 32, 32), generator=gen, dtype=torch.uint8)
            write_video(tmp_path / "data" / split / f"v{i}.mp4", video, fps=8)
    data = DataConfig(path=str(tmp_path / "data"), layout="auto", resolution=32, frames=16)
    pipe = SimpleNamespace(clip_frames=8, autoencoder=_Lossless())
    samples = torch.randint(0, 256, (8, 3, 16, 32, 32), generator=gen, dtype=torch.uint8)
    long = torch.randint(0, 256, (2, 3, 32, 32, 32), generator=gen, dtype=torch.uint8)
    rungs = _fvd_ladder(
        _detector(), 600.0, pipe, data, samples, long, seed=0, sampling="DDIM-8 eta 1"
    )["rungs"]
    # the held-out rungs have the 3 test videos, the generated one 8 clips
    assert rungs[FLOOR]["num"] == 3 and rungs["autoencoder reconstructions (rFVD)"]["num"] == 3
    assert max(r["num"] for r in rungs.values()) == 8
    assert rungs["generated, DDIM-8 eta 1"]["num"] == 8  # named by the sampling that made it
