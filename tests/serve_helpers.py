"""A tiny trained model and a running `pvdm serve` for the serve tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from train_helpers import TINY_AE, TINY_DM, pvdm_env

SYNTHETIC_CLASSES = 3  # the synthetic data's shapes: circle, square, triangle


def tiny_run(root: Path) -> Path:
    """A class-conditional diffusion run (16x16, 4-frame clips) trained for 2 steps."""
    import pvdm.train.diffusion as dm_train
    from pvdm.config import apply_overrides
    from pvdm.models import TriplaneAutoencoder
    from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS

    torch.manual_seed(0)
    ae = root / "autoencoder"
    TriplaneAutoencoder(
        apply_overrides(AUTOENCODER_RUNS["debug"](), TINY_AE).model
    ).save_pretrained(ae)
    cfg = apply_overrides(
        DIFFUSION_RUNS["debug"](),
        [
            *TINY_DM, f"autoencoder={ae}", "data.path=synthetic", "data.resolution=16",
            "data.frames=4", "data.num_workers=0", "train.max_steps=2", "train.checkpoint_every=2",
            "train.use_ema=false", "train.lr=0.01", f"model.num_classes={SYNTHETIC_CLASSES}",
        ],
    )  # fmt: skip
    return dm_train.train_diffusion(cfg, root / "run")


def video_file(path: Path, num_frames: int, size: int = 24) -> Path:
    """A real encoded video of moving stripes (the suffix picks the container: .avi, .mp4)."""
    from pvdm.data.write import encode_video

    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(size), np.arange(size), indexing="ij")
    red = ((x + 2 * t) % 8 < 4) * 200 + 20
    frames = np.stack([red, (y * 8) % 256, np.full_like(red, 90)], axis=-1).astype(np.uint8)
    codec = "mpeg4" if path.suffix == ".avi" else "libx264"
    encode_video(path, frames, codec=codec, fps=8)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m pvdm serve` on a free local port; stopped on exit, whatever happened."""

    def __init__(self, model: Path, out: Path, *extra: str, start_timeout: float = 90):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = out
        self.log = out.parent / "serve.log"
        argv = [sys.executable, "-m", "pvdm", "serve", "--model", str(model)]
        argv += ["--port", str(self.port), "--out", str(out), *extra]
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            argv, env=pvdm_env(), stdout=self._log_file, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pvdm serve exited early:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        raise AssertionError(f"pvdm serve did not answer in {timeout} s:\n{self.log.read_text()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log_file.close()
