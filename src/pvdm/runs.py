"""The run folder: what one training run writes and where, its lock, and finding its weights.

    RUN/config.yaml          the fully resolved config
    RUN/log.txt              the log
    RUN/stats.jsonl          one JSON line per report
    RUN/checkpoints/         training states state-<8 digits>.pt (optimizer, EMA, step...); an
                             autoencoder run's held-out guard also keeps best.pt
    RUN/snapshots/step-<8 digits>/   inference weights (a pretrained-model folder:
                             config.json + model.safetensors) per saved step, the newest
                             `train.keep_snapshots` kept
    RUN/snapshots/best/      the best held-out evaluation (autoencoder runs)
    RUN/previews/            preview videos
    RUN/tensorboard/         TensorBoard events (with train.tensorboard and tensorboard installed)
    RUN/autoencoder/, RUN/pipeline.json   (diffusion runs) the autoencoder used and how to sample
    RUN/.lock                held while a command writes there (`run_lock`)

Everything that reads or writes a run goes through `RunFolder`; inference code (model loading,
the pipeline, evaluation, the app) resolves a run folder to a snapshot with `resolve_snapshot`,
without importing the training code.

The lock is an `fcntl.flock` on an open file, so the kernel releases it whenever the process
ends, however it ends (a SIGKILL included): a lock left by a killed process never blocks the
next command. The holder's pid is written into the file only to name it in the error message.
The same lock guards other folders one command owns (a latent cache, the demo's, the app's).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from pvdm.errors import PvdmError

SNAPSHOTS = "snapshots"
BEST = "best"
LOCK_NAME = ".lock"
_STATE_RE = re.compile(r"^state-(\d+)\.pt$")


class RunFolder:
    """Paths inside a run folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def stats(self) -> Path:
        return self.root / "stats.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def snapshots(self) -> Path:
        return self.root / SNAPSHOTS

    @property
    def previews(self) -> Path:
        return self.root / "previews"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def autoencoder(self) -> Path:
        return self.root / "autoencoder"

    def is_run(self) -> bool:
        """Whether the folder holds a run (its config)."""
        return self.config.is_file()

    def create(self) -> None:
        """Make the folder and its sub-folders; remove temporary files a killed run left."""
        for path in (self.root, self.checkpoints, self.snapshots, self.previews):
            path.mkdir(parents=True, exist_ok=True)
        for stale in [*self.checkpoints.glob(".*.tmp"), *self.snapshots.glob("*/.*.tmp")]:
            stale.unlink(missing_ok=True)

    def state_path(self, step: int) -> Path:
        return self.checkpoints / f"state-{step:08d}.pt"

    def states(self) -> list[tuple[int, Path]]:
        """Saved training states, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for path in self.checkpoints.iterdir():
            m = _STATE_RE.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
        return sorted(found)

    def snapshot(self, name: int | str) -> Path:
        """snapshots/step-<8 digits> for a step, snapshots/<name> otherwise."""
        return snapshot_dir(self.root, name)

    def lock(self, what: str = "--outdir") -> contextlib.AbstractContextManager[Path]:
        """Hold the folder's lock for the duration of a `with` block (see `run_lock`)."""
        return run_lock(self.root, what)


def snapshot_dir(root: str | Path, name: int | str) -> Path:
    """RUN/snapshots/step-<8 digits> for a step, RUN/snapshots/<name> otherwise."""
    return Path(root) / SNAPSHOTS / (f"step-{name:08d}" if isinstance(name, int) else name)


def resolve_snapshot(path: str | Path) -> Path:
    """A model path for inference: a pretrained folder or file as is; for a run folder (or its
    snapshots/ folder, which a diffusion run's pipeline.json names), its best snapshot if it has
    one, else its newest step snapshot."""
    path = Path(path)
    snaps = path if path.name == SNAPSHOTS else path / SNAPSHOTS
    if snaps.is_dir():
        if (snaps / BEST / "config.json").is_file():
            return snaps / BEST
        steps = sorted(p for p in snaps.glob("step-*") if (p / "config.json").is_file())
        if steps:
            return steps[-1]
    return path


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str = "--outdir") -> Iterator[Path]:
    """Hold the lock of `folder` (created if needed) for the duration of the block; a second
    process asking for it gets one error naming the holder and `what` (the flag) to change."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise PvdmError(f"cannot create {folder} ({e.strerror}); choose another {what}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise PvdmError(
                f"{folder} is in use by another pvdm process (pid {holder}); wait for it to "
                f"finish or stop it, or choose another {what}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
