"""Every mistake a user can make on the command line is one `pvdm: error: ...` line and a
non-zero exit, never a traceback. One table; tiny models built once per module and
the CLI run in-process."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_helpers import TINY_AE, sets

from pvdm.cli import main
from pvdm.data import write_video
from pvdm.diffusion.cache import _KINDS as LATENT_KINDS
from pvdm.diffusion.cache import model_fingerprint
from pvdm.diffusion.pipeline import PVDMPipeline
from pvdm.diffusion.schedule import NoiseSchedule
from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset


def run(*args) -> tuple[int, str, str]:
    """`pvdm ARGS` in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _video(frames: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, frames, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> dict[str, Path]:
    """Models, videos and broken files that the cases refer to by name."""
    root = tmp_path_factory.mktemp("cli-errors")
    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug")).eval()
    unet = TriplaneUNet(unet_preset("debug")).eval()
    files: dict[str, Path] = {"root": root}
    files["ae"] = ae.save_pretrained(root / "ae")
    schedule = NoiseSchedule(num_timesteps=20)
    files["pipe"] = PVDMPipeline(unet, ae, schedule).save_pretrained(root / "pipe")
    unet3 = TriplaneUNet(dataclasses.replace(unet_preset("debug"), num_classes=3)).eval()
    files["pipe3"] = PVDMPipeline(unet3, ae, schedule, ["a", "b", "c"]).save_pretrained(
        root / "pipe3"
    )
    # a diffusion run folder (its step snapshot is a UNet)
    unet.save_pretrained(root / "dmrun" / "snapshots" / "step-00000001")
    ae.save_pretrained(root / "dmrun" / "autoencoder")
    files["dmrun"] = root / "dmrun"
    # broken pipeline.json files
    for name, text in {
        "pipe_garbage": "{not json",
        "pipe_list": "[1, 2]",
        "pipe_swapped": json.dumps({"unet": "autoencoder", "autoencoder": "unet"}),
    }.items():
        folder = root / name
        folder.mkdir()
        os.symlink(files["pipe"] / "unet", folder / "unet")
        os.symlink(files["pipe"] / "autoencoder", folder / "autoencoder")
        (folder / "pipeline.json").write_text(text)
        files[name] = folder
    # an fp16 copy and a NaN copy of the autoencoder
    weights = load_file(str(files["ae"] / "model.safetensors"))
    for name, change in {
        "ae_fp16": lambda t: t.half(),
        "ae_nan": lambda t: torch.full_like(t, float("nan")),
    }.items():
        header = json.loads((files["ae"] / "config.json").read_text())
        folder = root / name
        folder.mkdir()
        save_file(
            {k: change(v) if v.is_floating_point() else v for k, v in weights.items()},
            str(folder / "model.safetensors"),
            metadata={"pvdm": json.dumps(header, sort_keys=True), "format": "pt"},
        )
        files[name] = folder
    wide = TriplaneAutoencoder(
        dataclasses.replace(autoencoder_preset("debug"), resolution=16, frames=4, width=48)
    )
    files["ae_wide"] = wide.save_pretrained(root / "ae_wide")
    # videos
    files["video"] = write_video(root / "clip.mp4", _video(16))
    files["fakes_short"] = root / "fakes_short"
    write_video(files["fakes_short"] / "a.mp4", _video(16))
    write_video(files["fakes_short"] / "b.mp4", _video(2, seed=1))
    files["fakes_corrupt"] = root / "fakes_corrupt"
    write_video(files["fakes_corrupt"] / "a.mp4", _video(16))
    (files["fakes_corrupt"] / "b.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 64)
    files["file"] = root / "plain.txt"
    files["file"].write_text("not a folder")
    # broken latent caches
    for name, manifest, shard in (
        ("cache_garbage", "{{{", None),
        ("cache_truncated", None, b"\x10\x00\x00\x00\x00\x00\x00\x00{"),
        ("cache_outside", None, None),
    ):
        folder = root / name
        folder.mkdir()
        shard_name = (
            "../outside.safetensors" if name == "cache_outside" else "shard-00000.safetensors"
        )
        if manifest is None:
            manifest = json.dumps(
                {
                    "format": "pvdm-latent-cache",
                    "format_version": 1,
                    "geometry": {"channels": 4, "frames": 8, "height": 8, "width": 8},
                    "shards": [{"file": shard_name, "entries": 1}],
                }
            )
        (folder / "manifest.json").write_text(manifest)
        if shard is not None:
            (folder / "shard-00000.safetensors").write_bytes(shard)
        files[name] = folder
    # valid latent caches: 3 classes, and one recorded for another autoencoder
    shape = ae.latent_shape()
    n = 3
    tensors = {k: torch.zeros(n, shape.channels, shape.num_tokens) for k in LATENT_KINDS}
    tensors.update(label=torch.arange(n), video=torch.arange(n))
    for name, fingerprint in (("cache3", model_fingerprint(ae)), ("cache_otherae", "0" * 64)):
        folder = root / name
        folder.mkdir()
        save_file(tensors, str(folder / "shard-00000.safetensors"))
        manifest = {
            "format": "pvdm-latent-cache",
            "format_version": 1,
            "autoencoder_fingerprint": fingerprint,
            "autoencoder": "elsewhere/ae",
            "geometry": {
                "channels": shape.channels,
                "frames": shape.frames,
                "height": shape.height,
                "width": shape.width,
            },
            "classes": ["a", "b", "c"],
            "shards": [{"file": "shard-00000.safetensors", "entries": n}],
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))
        files[name] = folder
    # a run folder whose stats.jsonl is on a full disk
    (root / "run-train-disk-full").mkdir()
    os.symlink("/dev/full", root / "run-train-disk-full" / "stats.jsonl")
    return files


TRAIN = ["train-autoencoder", "--outdir", "{root}/run-{case}", *sets(TINY_AE)]
SAMPLE = ["sample", "--model", "{pipe}", "--out", "{root}/out-{case}", "--steps", "2"]
CONTINUE = ["continue", "{video}", "--model", "{pipe}", "--out", "{root}/out-{case}"]
EVAL = ["eval", "--metrics", "fvd2048_16f", "--model", "{pipe}", "--device", "cpu"]
DIFFUSION = ["train-diffusion", "--outdir", "{root}/dm-{case}", "--autoencoder", "{ae}"]

# (case, argv, text the error line must hold)
CASES = [
    ("sample-num-0", [*SAMPLE, "--num", "0"], "--num must be at least 1"),
    ("sample-frames-0", [*SAMPLE, "--frames", "0"], "--frames must be at least 1"),
    ("sample-frames-neg", [*SAMPLE, "--frames", "-8"], "--frames must be at least 1"),
    ("sample-steps-0", [*SAMPLE, "--steps", "0"], "--steps must be at least 1"),
    ("sample-steps-neg", [*SAMPLE, "--steps", "-1"], "--steps must be at least 1"),
    ("sample-steps-5000", [*SAMPLE, "--steps", "5000"], "steps must lie in [1, 20]"),
    ("sample-ddpm-1", [*SAMPLE, "--sampler", "ddpm", "--steps", "1"], "ddpm sampler runs all"),
    ("sample-batch-0", [*SAMPLE, "--batch-size", "0"], "--batch-size must be at least 1"),
    ("sample-fps-0", [*SAMPLE, "--fps", "0"], "--fps must be positive"),
    ("sample-fps-neg", [*SAMPLE, "--fps", "-1"], "--fps must be positive"),
    ("sample-eta-nan", [*SAMPLE, "--eta", "nan"], "--eta must lie in [0, 1]"),
    ("sample-seed-neg", [*SAMPLE, "--seed", "-1"], "--seed must lie in"),
    ("sample-seed-huge", [*SAMPLE, "--seed", "12345678901234567890123"], "--seed must lie in"),
    ("sample-device-tpu", [*SAMPLE, "--device", "tpu"], "is not a device"),
    ("sample-out-file", [*SAMPLE[:3], "--out", "{file}"], "is a file"),
    ("sample-out-unwritable", [*SAMPLE[:3], "--out", "{file}/sub"], "Not a directory"),
    ("sample-class-null", ["sample", "--model", "{pipe3}", "--out", "{root}/o", "--class", "3"],
     "class index 3 is out of range"),
    ("sample-class-uncond", [*SAMPLE, "--class", "0"], "not class-conditional"),
    ("sample-pipe-garbage", ["sample", "--model", "{pipe_garbage}", "--out", "{root}/o"],
     "cannot be read"),
    ("sample-pipe-list", ["sample", "--model", "{pipe_list}", "--out", "{root}/o"],
     "must hold a JSON object"),
    ("sample-pipe-swapped", ["sample", "--model", "{pipe_swapped}", "--out", "{root}/o"],
     "swapped"),
    ("continue-frames-neg", [*CONTINUE, "--frames", "-8"], "--frames must be at least 1"),
    ("continue-num-0", [*CONTINUE, "--frames", "8", "--num", "0"], "--num must be at least 1"),
    ("continue-steps-0", [*CONTINUE, "--frames", "8", "--steps", "0"], "--steps must be at"),
    ("continue-fps-0", [*CONTINUE, "--frames", "8", "--fps", "0"], "--fps must be positive"),
    ("train-lr-nan", [*TRAIN, "--set", "train.lr=nan"], "must be a finite number"),
    ("train-seed-neg", [*TRAIN, "--seed", "-1"], "train.seed must lie in"),
    ("train-seed-huge", [*TRAIN, "--seed", "12345678901234567890123"], "train.seed must lie"),
    ("train-device-tpu", [*TRAIN, "--set", "train.device=tpu"], "is not a device"),
    ("train-preset-and-config", [*TRAIN, "--preset", "debug", "--config", "{root}/c.yaml"],
     "not both"),
    ("train-init-width", [*TRAIN, "--init", "{ae_wide}", "--max-steps", "1"],
     "does not fit this model"),
    ("dm-autoencoder-is-unet", [*DIFFUSION[:3], "--autoencoder", "{dmrun}"], "not an autoencoder"),
    ("dm-cache-garbage", [*DIFFUSION, "--data", "{cache_garbage}"], "cannot be read"),
    ("dm-cache-truncated", [*DIFFUSION, "--data", "{cache_truncated}"], "cannot be read"),
    ("dm-cache-outside", [*DIFFUSION, "--data", "{cache_outside}"], "outside the cache folder"),
    ("dm-num-classes-small", [*DIFFUSION, "--data", "{cache3}", "--set", "model.num_classes=2"],
     "the data has 3 classes but model.num_classes is 2"),
    ("dm-other-autoencoder", [*DIFFUSION, "--data", "{cache_otherae}"],
     "encoded with another autoencoder"),
    ("train-disk-full", [*TRAIN, "--max-steps", "1"], "No space left on device"),
    ("cache-latents-unet", ["cache-latents", "--autoencoder", "{dmrun}", "--data", "synthetic",
     "--out", "{root}/c"], "not an autoencoder"),
    ("reconstruct-txt", ["reconstruct", "--autoencoder", "{ae}", "--input", "{video}",
     "--out", "{root}/x.txt"], "must end in .mp4, .gif or .png"),
    ("reconstruct-fp16-nan", ["reconstruct", "--autoencoder", "{ae_nan}", "--input", "{video}",
     "--out", "{root}/x.gif"], "non-finite"),
    ("reconstruct-unet", ["reconstruct", "--autoencoder", "{dmrun}", "--input", "{video}",
     "--out", "{root}/x.gif"], "not an autoencoder"),
    ("demo-minutes-nan", ["demo", "--minutes", "nan", "--out", "{root}/demo"],
     "--minutes must be positive"),
    ("eval-model-and-fake", ["eval", "--metrics", "fvd2048_16f", "--model", "{pipe}", "--fake",
     "{fakes_short}", "--device", "cpu"], "not both"),
    ("eval-ddpm-steps", [*EVAL, "--sampler", "ddpm", "--steps", "400"], "ddpm sampler runs all"),
    ("eval-steps-0", [*EVAL, "--steps", "0"], "--steps must be at least 1"),
    ("eval-steps-5000", [*EVAL, "--steps", "5000"], "steps must lie in [1, 20]"),
    ("eval-eta-nan", [*EVAL, "--eta", "nan"], "--eta must lie in [0, 1]"),
    ("eval-seed-neg", [*EVAL, "--seed", "-1"], "--seed must lie in"),
    ("eval-device-tpu", [*EVAL[:-2], "--device", "tpu"], "is not a device"),
    ("eval-pipe-garbage", ["eval", "--metrics", "fvd2048_16f", "--model", "{pipe_garbage}",
     "--device", "cpu"], "cannot be read"),
    ("eval-pipe-list", ["eval", "--metrics", "fvd2048_16f", "--model", "{pipe_list}",
     "--device", "cpu"], "must hold a JSON object"),
    ("eval-pipe-swapped", ["eval", "--metrics", "fvd2048_16f", "--model", "{pipe_swapped}",
     "--device", "cpu"], "swapped"),
    ("cache-latents-device-tpu", ["cache-latents", "--autoencoder", "{ae}", "--data",
     "synthetic", "--out", "{root}/c-{case}", "--device", "tpu"], "is not a device"),
]  # fmt: skip


REFUSED_BEFORE_WRITING = {
    "train-lr-nan", "train-seed-neg", "train-seed-huge", "train-device-tpu",
    "train-preset-and-config",
}  # fmt: skip


@pytest.mark.parametrize("case,argv,text", CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_line(f, case, argv, text) -> None:
    args = [a.format(case=case, **f) for a in argv]
    code, _, err = run(*args)
    lines = [line for line in err.splitlines() if line.startswith("pvdm: error:")]
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert text in lines[0], lines[0]
    if case in REFUSED_BEFORE_WRITING:
        # refused before anything is written: the identical command can be fixed and re-run
        assert not (f["root"] / f"run-{case}" / "config.yaml").exists()


def test_fp16_snapshot_loads_as_float32(f) -> None:
    from pvdm.models import load_model

    model = load_model(f["ae_fp16"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ref = load_model(f["ae"])
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b.half().float()), name


def test_dataloader_worker_error_is_unwrapped(f) -> None:
    """A short video under --fake fails in a DataLoader worker; the CLI shows its message."""
    from pvdm.cli import one_line
    from pvdm.errors import DataError
    from pvdm.metrics.protocols import get_protocol
    from pvdm.metrics.runner import resolve_protocol
    from pvdm.metrics.sources import FolderVideos

    protocol = resolve_protocol(get_protocol("fvd2048_16f"), num=2, split=None, resolution=32)
    fake = FolderVideos.open(f["fakes_short"])
    with pytest.raises(DataError) as info:
        list(fake.batches(protocol, 1, num_workers=1))
    assert "Traceback" in str(info.value)  # what torch makes of it
    assert one_line(str(info.value)).startswith(f"video {f['fakes_short'] / 'b.mp4'} has 2 frames")


def test_disk_full_during_torch_save_is_one_line(monkeypatch) -> None:
    import pvdm.cli.train

    def full(args):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . unexpected pos 128 vs 64\n"
            "PytorchStreamWriter failed writing file data/0: file write failed"
        )

    monkeypatch.setattr(pvdm.cli.train, "_train_autoencoder", full)
    code, _, err = run("train-autoencoder", "--outdir", "x")
    assert code == 1 and err.count("\n") == 1 and err.startswith("pvdm: error: the disk is full")


def test_disk_full_anywhere_is_one_line(monkeypatch) -> None:
    import errno

    import pvdm.cli.generate

    def full(args):  # e.g. PyAV writing a sample, or safetensors writing a cache shard
        raise OSError(errno.ENOSPC, "No space left on device", "out/sample-0000.mp4")

    monkeypatch.setattr(pvdm.cli.generate, "_sample", full)
    code, _, err = run("sample", "--model", "m", "--out", "out")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("pvdm: error: No space left on device (out/sample-0000.mp4); free disk")
