"""Reliability: nothing lost, nothing torn, memory bounded, processes that say how they stopped.

Whole-line JSON appends, keep-last-N that counts readable states only, the run-folder lock,
exit codes after a signal stop, NaN-safe config comparison, output folders, file modes, and the
peak memory of decoding a huge-frame video for a small model.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from train_helpers import pvdm_env

from pvdm.errors import CheckpointError, PvdmError
from pvdm.jsonl import append_line, read_lines
from pvdm.runs import RunFolder
from pvdm.train.checkpoint import (
    load_latest_training_state,
    save_training_state,
)

# --- whole-line appends ---------------------------------------------------------------------


def test_torn_last_line_is_skipped_and_not_glued_to(tmp_path, caplog) -> None:
    path = tmp_path / "stats.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo')  # a full disk cut the last line
    with caplog.at_level(logging.WARNING):
        assert read_lines(path) == [{"step": 1}]
    assert "line 2" in caplog.text
    append_line(path, {"step": 3})
    assert read_lines(path) == [{"step": 1}, {"step": 3}]
    assert path.read_text().endswith('\n{"step": 3}\n')


def test_failed_append_leaves_no_half_line(tmp_path, monkeypatch) -> None:
    path = tmp_path / "metric-x.jsonl"
    append_line(path, {"a": 1})
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up in the middle of the line
        if len(data) > 4:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(PvdmError, match="No space left on device"):
        append_line(path, {"b": "x" * 100})
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_append_to_a_full_device_is_a_clear_error(tmp_path) -> None:
    os.symlink("/dev/full", tmp_path / "stats.jsonl")
    with pytest.raises(PvdmError, match="Free disk space"):
        append_line(tmp_path / "stats.jsonl", {"step": 1})


def test_metric_records_and_monitor_use_whole_line_appends(tmp_path) -> None:
    from pvdm.metrics.results import append_record, read_records
    from pvdm.train.monitor import Monitor

    (tmp_path / "metric-m.jsonl").write_text('{"metric": "m", "v": 1}\n{"metr')
    append_record(tmp_path, {"metric": "m", "v": 2})
    assert [r["v"] for r in read_records(tmp_path / "metric-m.jsonl")] == [1, 2]
    stats = tmp_path / "stats.jsonl"
    stats.write_text('{"step": 1, "loss": 0.5}\n{"step"')
    monitor = Monitor(stats, start_step=1, max_steps=4, device=torch.device("cpu"))
    monitor.add({"loss": 0.25})
    monitor.report(2)
    assert [r["step"] for r in read_lines(stats)] == [1, 2]


# --- training states ------------------------------------------------------------------------


def _state(step: int) -> dict:
    return {"step": step, "w": torch.full((4,), float(step))}


def test_unreadable_newer_states_never_push_out_the_good_ones(tmp_path) -> None:
    run = RunFolder(tmp_path)
    run.create()
    for step in (1, 2):
        save_training_state(run, step, _state(step), keep=2)
    for step in (30, 40):  # truncated copies with higher step numbers (an interrupted rsync)
        good = run.state_path(2).read_bytes()
        run.state_path(step).write_bytes(good[: len(good) // 2])
    state = load_latest_training_state(run)
    assert state["step"] == 2  # the newest readable one
    save_training_state(run, 3, _state(3), keep=2)
    names = sorted(p.name for _, p in run.states())
    # the two newest readable states are kept; the unreadable ones are neither counted nor deleted
    assert names == [f"state-{s:08d}.pt" for s in (2, 3, 30, 40)]
    assert load_latest_training_state(run)["step"] == 3


def test_every_state_unreadable_is_an_error_unless_restart(tmp_path) -> None:
    run = RunFolder(tmp_path)
    run.create()
    run.state_path(5).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="--restart"):
        load_latest_training_state(run)
    assert load_latest_training_state(run, restart=True) is None
    assert run.state_path(5).exists()  # left in place


def test_create_cleans_temporary_files_in_snapshots(tmp_path) -> None:
    run = RunFolder(tmp_path)
    (run.snapshots / "best").mkdir(parents=True)
    stale = run.snapshots / "best" / ".model.safetensors.abc123.tmp"
    stale.write_bytes(b"half")
    keep = run.snapshots / "best" / "model.safetensors"
    keep.write_bytes(b"x")
    run.create()
    assert not stale.exists() and keep.exists()


def test_weights_and_cache_shards_get_the_usual_mode(tmp_path) -> None:
    from pvdm.models import TriplaneUNet, unet_preset

    old = os.umask(0o022)
    try:
        path = TriplaneUNet(unet_preset("debug")).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert (path / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (path / "config.json").stat().st_mode & 0o777 == 0o644


# --- config ---------------------------------------------------------------------------------


def test_nan_safe_comparison() -> None:
    from pvdm.train.common import same_value

    nan = float("nan")
    assert same_value(nan, float("nan")) and same_value([1.0, nan], (1.0, float("nan")))
    assert not same_value(nan, 1.0) and not same_value([1.0], [1.0, 2.0])


def test_nan_is_refused_in_every_float_field(tmp_path) -> None:
    from pvdm.config import ConfigError, apply_overrides, load_config
    from pvdm.train.diffusion import DiffusionRunConfig

    with pytest.raises(ConfigError, match=r"'diffusion\.cond_prob' must be a finite number"):
        apply_overrides(DiffusionRunConfig(), ["diffusion.cond_prob=nan"])
    saved = tmp_path / "config.yaml"  # written by an older pvdm
    saved.write_text("train:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=re.escape(f"{saved}: config field 'train.lr'")):
        load_config(DiffusionRunConfig, saved)


# --- processes ------------------------------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pvdm.runs import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_run_lock_refuses_a_second_process_and_survives_sigkill(tmp_path) -> None:
    from pvdm.runs import run_lock

    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], env=pvdm_env(), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"locked"
        busy = re.escape(f"in use by another pvdm process (pid {proc.pid})")
        with pytest.raises(PvdmError, match=busy), run_lock(tmp_path):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with run_lock(tmp_path):  # the kernel dropped the dead process's lock
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    with run_lock(tmp_path):  # and ours was released on leaving the block
        pass


def test_training_commands_take_the_lock(tmp_path) -> None:
    from pvdm.cli import main
    from pvdm.runs import run_lock

    with run_lock(tmp_path / "run"):
        code = main(["train-autoencoder", "--outdir", str(tmp_path / "run"), "--max-steps", "1"])
    assert code == 2
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_cache_latents_takes_the_lock_of_its_output_folder(tmp_path, capsys) -> None:
    from pvdm.cli import main
    from pvdm.runs import run_lock

    argv = ["cache-latents", "--autoencoder", str(tmp_path / "none"), "--data", "synthetic"]
    argv += ["--out", str(tmp_path / "cache")]
    with run_lock(tmp_path / "cache"):  # the lock is taken before the autoencoder is read
        assert main(argv) == 2
    assert "in use by another pvdm process" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "manifest.json").exists()
    assert main(argv) != 0  # free again: now it fails on the missing autoencoder
    err = capsys.readouterr().err
    assert "in use" not in err and "none" in err


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_by_signal_exits_non_zero(monkeypatch, tmp_path, sig, code) -> None:
    import pvdm.train.autoencoder
    from pvdm.cli import main
    from pvdm.train.interrupt import StopRequest

    def train(cfg, outdir, init=None, restart=False):  # a loop that gets a signal and saves
        with StopRequest() as stop:
            os.kill(os.getpid(), sig)
            assert stop.requested
        return outdir

    monkeypatch.setattr(pvdm.train.autoencoder, "train_autoencoder", train)
    assert main(["train-autoencoder", "--outdir", str(tmp_path / "r"), "--max-steps", "1"]) == code
    monkeypatch.setattr(
        pvdm.train.autoencoder, "train_autoencoder", lambda cfg, outdir, **kw: outdir
    )
    assert main(["train-autoencoder", "--outdir", str(tmp_path / "r"), "--max-steps", "1"]) == 0


# --- sample output folders ------------------------------------------------------------------


def test_output_folder_is_cleared_of_old_samples_only(tmp_path) -> None:
    from pvdm.diffusion.sample_folder import prepare_output_folder, write_samples

    out = tmp_path / "out"
    videos = torch.zeros(3, 3, 2, 8, 8, dtype=torch.uint8)
    prepare_output_folder(out)
    write_samples(out, videos, {"num": 3}, fmt="png")  # PNG frame folders sample-000i/
    prepare_output_folder(out)
    write_samples(out, videos[:1], {"num": 1})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "sample-0000.mp4", "settings.json"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings == {"num": 1, "format": "mp4", "lossless": False}
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PvdmError, match=r"notes\.txt"):
        prepare_output_folder(out)
    assert (out / "sample-0000.mp4").exists()  # nothing removed when refusing


def test_a_file_appearing_during_sampling_does_not_abort_the_write(tmp_path) -> None:
    from pvdm.diffusion.sample_folder import prepare_output_folder, write_samples

    out = prepare_output_folder(tmp_path / "out")  # the CLI's one check, before sampling
    (out / "notes.txt").write_text("written while sampling")
    videos = torch.zeros(2, 3, 2, 8, 8, dtype=torch.uint8)
    paths = write_samples(out, videos, {"num": 2}, fmt="mkv")
    assert paths == [out / "sample-0000.mkv", out / "sample-0001.mkv"]
    assert all(p.is_file() for p in paths)
    assert (out / "notes.txt").read_text() == "written while sampling"


# --- bounded memory -------------------------------------------------------------------------

_PEAK = textwrap.dedent(
    """
    import sys
    import torch
    from pvdm.cli.generate import load_video_for_model

    def vm_hwm_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    base = vm_hwm_mb()
    if sys.argv[2] == "load":
        video = load_video_for_model(sys.argv[1], 32)
        assert video.shape == (3, 9, 32, 32) and video.dtype == torch.uint8, video.shape
    print(vm_hwm_mb() - base)
    """
)


def _huge_frame_video(path, frames: int = 9, size: int = 4000) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        image = np.full((size, size, 3), (40, 120, 200), dtype=np.uint8)
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_huge_frames_are_decoded_in_bounded_memory(tmp_path) -> None:
    """A small file of 9 frames of 4000x4000 for a 32x32 model: each frame is cropped and
    resized as it decodes, so the peak is about one frame (~250 MB), not the clip (the old
    whole-clip decode plus float resize peaked above 2 GB here)."""
    path = tmp_path / "huge.mp4"
    t0 = time.perf_counter()
    _huge_frame_video(path)
    assert path.stat().st_size < 2_000_000
    peaks = {}
    for mode in ("import", "load"):
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK, str(path), mode],
            env=pvdm_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        peaks[mode] = float(proc.stdout.strip().splitlines()[-1])
    assert peaks["load"] < 600, (peaks, time.perf_counter() - t0)


def test_absurd_frame_sizes_are_refused(tmp_path, monkeypatch) -> None:
    import pvdm.data.decode as decode
    from pvdm.data import write_video
    from pvdm.data.meta import ReadError

    path = write_video(tmp_path / "v.mp4", torch.zeros(3, 4, 32, 32, dtype=torch.uint8))
    monkeypatch.setattr(decode, "MAX_FRAME_PIXELS", 32 * 32 - 1)
    with pytest.raises(ReadError, match="32x32 are too large"):
        decode.probe(path)


def test_skip_warnings_print_once_per_video(tmp_path, caplog) -> None:
    from pvdm.data import DataConfig, open_dataset, write_video

    write_video(tmp_path / "good.mp4", torch.zeros(3, 8, 16, 16, dtype=torch.uint8))
    (tmp_path / "empty.mp4").write_bytes(b"")
    cfg = DataConfig(path=str(tmp_path), resolution=16, frames=4)
    with caplog.at_level(logging.WARNING):
        open_dataset(cfg)
        open_dataset(cfg)  # e.g. the held-out split of a folder without splits
    skips = [r for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skips) == 1 and "empty.mp4" in skips[0].getMessage()


def test_self_looping_symlink_in_a_dataset_is_skipped(tmp_path, caplog) -> None:
    from pvdm.data import DataConfig, open_dataset, write_video

    write_video(tmp_path / "v.mp4", torch.zeros(3, 8, 16, 16, dtype=torch.uint8))
    os.symlink("loop", tmp_path / "loop")
    with caplog.at_level(logging.WARNING):
        dataset = open_dataset(DataConfig(path=str(tmp_path), resolution=16, frames=4))
    assert [Path(v.path).name for v in dataset.videos] == ["v.mp4"]
    assert "loop: Too many levels of symbolic links" in caplog.text


def test_a_failed_first_start_does_not_pin_the_settings(tmp_path) -> None:
    from pvdm.config import ConfigError, apply_overrides, load_config
    from pvdm.runtime import DistInfo
    from pvdm.train.checkpoint import save_training_state
    from pvdm.train.common import prepare_run
    from pvdm.train.diffusion import DiffusionRunConfig

    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    run = RunFolder(tmp_path / "run")
    first = apply_overrides(DiffusionRunConfig(), ["train.lr=0.5"])
    prepare_run(run, first, info)  # ...and the start failed before any step
    second = apply_overrides(DiffusionRunConfig(), ["train.lr=0.25"])
    prepare_run(run, second, info)
    assert load_config(DiffusionRunConfig, run.config).train.lr == 0.25
    save_training_state(run, 1, _state(1), keep=1)  # now it has trained: settings are fixed
    with pytest.raises(ConfigError, match="different settings"):
        prepare_run(run, first, info)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"unknown_field": 1}'])
def test_a_garbage_demo_state_is_one_line(tmp_path, capsys, text) -> None:
    from pvdm.cli import main

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo.json").write_text(text)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--minutes", "1"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("pvdm: error:")]
    assert len(lines) == 1 and "demo.json cannot be read" in lines[0], lines
