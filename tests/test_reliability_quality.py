"""benchmarks/quality.py refuses every bad flag with one line and a non-zero exit, before any
work, and writes no ladder for the serve page after a refusal."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory) -> Path:
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug"))
    folder = tmp_path_factory.mktemp("quality") / "pipe"
    return PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae).save_pretrained(folder)


def _run(quality, argv: list, monkeypatch) -> int:
    """The script's exit code for command-line `argv`, as `python quality.py ARGV` exits."""
    monkeypatch.setattr(sys, "argv", ["quality.py", *map(str, argv)])
    try:
        return quality.main()
    except SystemExit as e:  # argparse's own errors
        return int(e.code)


BAD_FLAGS = [
    (["--num", "0"], "--num must be at least 2, got 0"),
    (["--num", "-3"], "--num must be at least 2, got -3"),
    (["--num", "abc"], "--num: invalid int value"),
    (["--samplers", "ddim:abc:1"], "steps must be a whole number"),
    (["--samplers", "ddim:5:nan"], "eta must lie in [0, 1], got nan"),
    (["--samplers", "ddim:-5:1"], "steps must be 0 or more"),
    (["--samplers", "euler:5:1"], "unknown sampler 'euler'"),
    (["--samplers", "ddim:5"], "expected sampler:steps:eta"),
    (["--samplers", ""], "--samplers is empty"),
    (["--sampler-grid", "ddim:0,20:0"], "step counts must be at least 1"),
    (["--sampler-grid", "dpm:10:x"], "steps must be a whole number and eta a number"),
    (["--device", "cuda:7"], "cuda"),
    (["--device", "tpu"], "'tpu' is not a device"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--clips-per-video", "0"], "--clips-per-video must be at least 1, got 0"),
    (["--rungs", "floor,bogus"], "unknown rungs ['bogus']"),
    (["--long-frames", "8"], "the drift rung needs"),
    (["--long-videos", "0"], "the drift rung needs"),
    (["--layout", "bogus"], "--layout 'bogus'"),
    (["--data", "/no/such/data"], "--data /no/such/data does not exist"),
    (["--i3d", "/no/such/i3d.pt"], "weights file not found: /no/such/i3d.pt"),
    (["--out", "{tmp}/out/ladder.png"], "must end in .json"),
    (["--out", "{tmp}/file/quality.json"], "cannot be written"),
    (["--out", "/proc/quality.json"], "cannot be written"),
    (["--out", "{tmp}/dir.json"], "is a folder"),
    (["--reference-cache", "{tmp}/dir.json"], "is a folder"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_before_any_work(
    quality, pipe_dir, tmp_path, monkeypatch, capsys, flags, message
) -> None:
    from pvdm.serve.model_card import LADDER_FILE

    def no_work(args):
        raise AssertionError("the measurement started")

    monkeypatch.setattr(quality, "run", no_work)
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "dir.json").mkdir()
    flags = [f.format(tmp=tmp_path) for f in flags]
    argv = ["--model", pipe_dir, "--data", "synthetic", "--out", tmp_path / "q.json", *flags]
    assert _run(quality, argv, monkeypatch) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quality.py: error: "), lines
    assert message in lines[0]
    assert not (pipe_dir / LADDER_FILE).exists()


def test_steps_the_schedule_cannot_run_are_refused_before_measuring(
    quality, pipe_dir, tmp_path, monkeypatch, capsys
) -> None:
    import pvdm.metrics.protocols

    def no_detector(*args, **kwargs):
        raise AssertionError("the detector was loaded")

    monkeypatch.setattr(pvdm.metrics.protocols, "load_fvd_detector", no_detector)
    argv = ["--model", pipe_dir, "--data", "synthetic", "--out", tmp_path / "q.json"]
    assert _run(quality, [*argv, "--samplers", "ddim:100000:1"], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps must lie in [1, " in err[0], err
