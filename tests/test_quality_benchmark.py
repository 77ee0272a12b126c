"""benchmarks/quality.py runs end to end on a tiny random pipeline and writes JSON + PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_helpers import sky
from PIL import Image

import pvdm.models

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


class _MeanColour(torch.nn.Module):
    """A cheap TorchScript stand-in for I3D: per-frame mean colour and motion (uint8 in)."""

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = True,
        resize: bool = True,
        return_features: bool = True,
    ) -> torch.Tensor:
        v = x.float() / 255.0
        colour = v.mean(dim=(3, 4)).flatten(1)
        motion = (v[:, :, 1:] - v[:, :, :-1]).abs().mean(dim=(3, 4)).flatten(1)
        return torch.cat([colour, motion], dim=1)


def _tiny_pipe_and_detector(tmp_path: Path) -> Path:
    """A random debug pipeline in tmp_path/pipe; the stand-in detector's file."""
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug"))
    PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae).save_pretrained(tmp_path / "pipe")
    detector = tmp_path / "stand_in.pt"
    torch.jit.save(torch.jit.script(_MeanColour()), detector)
    return detector


@pytest.mark.skipif(not hasattr(pvdm.models, "autoencoder_preset"), reason="no model presets")
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_quality_ladder_smoke_run(tmp_path) -> None:
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug"))  # 32x32, 8-frame clips
    PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae).save_pretrained(tmp_path / "pipe")
    detector = tmp_path / "stand_in.pt"
    torch.jit.save(torch.jit.script(_MeanColour()), detector)
    out = tmp_path / "quality.json"
    args = [
        "--model", tmp_path / "pipe", "--data", sky(), "--num", 10, "--long-videos", 2,
        "--long-frames", 32, "--samplers", "ddim:2:1,dpm:2:0", "--sampler-grid", "ddim:2,3:0",
        "--i3d", detector, "--trust-detector-code", "--out", out,
    ]  # fmt: skip
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["rungs"]]
    assert names == [
        "real vs disjoint real (floor)",
        "autoencoder reconstructions (rFVD)",
        "generated, DDIM-2 eta 1",
        "generated, DPM-Solver++(2M)-2",
        "continuations of held-out clips (DDIM-2 eta 1)",
        "frozen real frame",
        "time-shuffled real frames",
        "uniform noise",
    ]
    rows = {r["name"]: r for r in report["rungs"]}
    # sky_mini's test split has 8 videos: the held-out rungs have 8 clips, the others 10.
    held_out = {"floor", "autoencoder", "continuation", "baseline"}
    assert all(r["num"] == (8 if r["group"] in held_out else 10) for r in report["rungs"])
    assert all(r["fvd"] >= 0 for r in report["rungs"])
    # An untrained model and noise are far from real video; the floor is not.
    assert rows["uniform noise"]["fvd"] > rows["real vs disjoint real (floor)"]["fvd"]
    assert 0 < rows["autoencoder reconstructions (rFVD)"]["psnr_db"] < 40
    assert len(report["drift"]["fvd"]) == 2 and len(report["sampler_grid"]) == 2
    assert report["detector"]["source"].startswith("StyleGAN-V")  # the TorchScript path
    with Image.open(report["chart"]) as chart:
        assert chart.format == "PNG" and chart.width == 900
    # the same ladder beside the model, where the serve page's model card shows it
    from pvdm.serve.model_card import LADDER_FILE

    assert json.loads((tmp_path / "pipe" / LADDER_FILE).read_text()) == report
    from pvdm.serve.model_card import model_card

    card = model_card(PVDMPipeline.from_pretrained(tmp_path / "pipe"), tmp_path / "pipe")
    assert "uniform noise" in card and "frozen real frame" in card


@pytest.mark.skipif(not hasattr(pvdm.models, "autoencoder_preset"), reason="no model presets")
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_quality_subset_of_rungs_reuses_cached_reference_features(tmp_path) -> None:
    detector = _tiny_pipe_and_detector(tmp_path)
    cache = tmp_path / "reference.pt"
    reports = []
    for num in (6, 6, 4):
        out = tmp_path / f"quality-{len(reports)}.json"
        args = [
            "--model", tmp_path / "pipe", "--data", "synthetic", "--num", num,
            "--samplers", "ddim:2:1", "--rungs", "autoencoder,generated",
            "--reference-cache", cache, "--i3d", detector, "--trust-detector-code", "--out", out,
        ]  # fmt: skip
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports.append(json.loads(out.read_text()))
        if len(reports) == 1:
            saved = torch.load(cache, weights_only=True)
            # the cached features are those of 6 reference clips; a changed count replaces them
            assert saved["clips"] == 6 and saved["features"].shape[0] == 6
            saved["features"] = saved["features"] + 1000.0  # a stale copy would show in the FVD
            torch.save(saved, cache)
    names = [r["name"] for r in reports[0]["rungs"]]
    assert names == ["autoencoder reconstructions (rFVD)", "generated, DDIM-2 eta 1"]
    assert reports[0]["drift"]["fvd"] == [] and reports[0]["reference"]["clips"] == 6
    # the second run read the (tampered) cache: its FVDs are far larger than the first run's
    first, second = (r["rungs"][0]["fvd"] for r in reports[:2])
    assert second > 100 * first + 1000
    assert torch.load(cache, weights_only=True)["clips"] == 4  # recomputed for --num 4
    assert reports[2]["rungs"][0]["num"] == 4


@pytest.mark.skipif(not hasattr(pvdm.models, "autoencoder_preset"), reason="no model presets")
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_clips_per_video_scores_a_small_split_on_more_clips(tmp_path) -> None:
    detector = _tiny_pipe_and_detector(tmp_path)
    reports = []
    for per_video in (1, 3):
        out = tmp_path / f"quality-{per_video}.json"
        args = [
            "--model", tmp_path / "pipe", "--data", sky(), "--num", 44, "--rungs", "floor",
            "--clips-per-video", per_video, "--i3d", detector, "--trust-detector-code",
            "--out", out,
        ]  # fmt: skip
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports.append(json.loads(out.read_text()))
    # sky_mini: 40 train videos and 8 held-out ones, 32 frames each
    assert [r["reference"]["clips"] for r in reports] == [40, 44]
    assert [r["rungs"][0]["num"] for r in reports] == [8, 24]
    assert [r["clips_per_video"] for r in reports] == [1, 3]
    assert reports[0]["rungs"][0]["fvd"] != reports[1]["rungs"][0]["fvd"]
