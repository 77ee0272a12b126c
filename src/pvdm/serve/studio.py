"""The work behind the serve page: sampling and continuing videos with one loaded pipeline.

Web-free, so it is testable on its own. One job runs at a time (the page queues the rest). A
job is a `SamplingConfig` run by the pipeline, whose step callback drives the progress bar (the
sampler's steps and the clips) and lets a cancel request stop the job at its next step; a job
belongs to the client that asked for it, and only that client's cancel stops it. Outputs go to
the studio's own folder, one subfolder per job, oldest pruned; the folder is locked while the
studio lives, so two servers never prune each other's jobs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pvdm.diffusion.pipeline import PVDMPipeline
from pvdm.diffusion.sampling import SamplingConfig
from pvdm.errors import DataError, PvdmError
from pvdm.runs import run_lock

NO_CLASS = "(unconditional)"
# Written into an output folder serve creates: only such a folder is served and pruned.
OUT_MARKER = ".pvdm-serve"

ProgressFn = Callable[[float, str], None]


class Cancelled(PvdmError):
    """The job was stopped by a cancel request."""


@dataclass
class Limits:
    """What one request may ask for (keeps a shared server responsive)."""

    max_videos: int = 8
    max_frames: int = 512  # generated frames per video
    max_upload_frames: int = 4096  # frames an uploaded video may have
    max_upload_pixels: int = 4096 * 2160  # per frame
    keep_jobs: int = 32  # job folders kept in the output folder


@dataclass
class Result:
    """What a job made: mp4 files and the settings and timing to show with them."""

    videos: list[Path]
    info: dict[str, Any] = field(default_factory=dict)


class Studio:
    """A loaded pipeline plus an output folder; `sample` and `continue_video` make mp4 files."""

    def __init__(
        self,
        pipe: PVDMPipeline,
        out_dir: str | Path,
        *,
        fps: float = 8.0,
        limits: Limits | None = None,
    ):
        self.pipe = pipe
        self.out_dir = prepare_out_dir(out_dir)
        self._folder_lock = contextlib.ExitStack()  # held until close(): one server per folder
        self._folder_lock.enter_context(run_lock(self.out_dir, "--out"))
        self.fps = fps
        self.limits = limits or Limits()
        self._cancel = threading.Event()
        self._owner: str | None = None  # who asked for the running job
        self._lock = threading.Lock()  # one job at a time, whatever calls us
        self._jobs = itertools.count(1)

    def close(self) -> None:
        """Release the output folder (another studio may use it then)."""
        self._folder_lock.close()

    # ---- what the model offers -------------------------------------------------------
    @property
    def classes(self) -> list[str] | None:
        """Class names of a class-conditional model (None otherwise)."""
        if getattr(self.pipe.unet.config, "num_classes", None) is None:
            return None
        return self.pipe.classes or [str(i) for i in range(self.pipe.unet.config.num_classes)]

    @property
    def clip_frames(self) -> int:
        return self.pipe.clip_frames

    @property
    def resolution(self) -> int:
        return self.pipe.autoencoder.config.resolution

    def default_steps(self, sampler: str) -> int:
        """The steps `sampler` runs when none are given."""
        return self.pipe.resolve(sampler=sampler).steps

    def cancel(self, owner: str | None = None) -> bool:
        """Stop the running job at its next denoising step, if `owner` asked for it (None:
        whoever did). Returns whether a job was told to stop."""
        if self._owner is None or (owner is not None and owner != self._owner):
            return False
        self._cancel.set()
        return True

    # ---- jobs ------------------------------------------------------------------------
    def sample(
        self,
        request: SamplingConfig | None = None,
        /,
        *,
        progress: ProgressFn | None = None,
        owner: str | None = None,
        **fields: Any,
    ) -> Result:
        """Videos for `request` (a `SamplingConfig`, or its fields by keyword; `labels`
        NO_CLASS means none); video i uses seed + i. `owner` names the client (for cancel)."""
        request = (request or SamplingConfig()).replace(**fields)
        if request.labels is not None and tuple(request.labels) in ((None,), ("",), (NO_CLASS,)):
            request = request.replace(labels=None)
        request = self._resolve(request.replace(batch_size=request.num))
        with self._job(progress, owner) as (folder, started, on_step):
            videos = self.pipe(request, callback=on_step, progress=False)
            seeds = request.seed_list
            paths = [self._write(folder / f"sample-{s}.mp4", v) for s, v in zip(seeds, videos)]
            info = {
                "action": "sample",
                **request.record(),
                "clips_per_video": -(-request.frames // self.clip_frames),
                "seconds": round(time.perf_counter() - started, 2),
            }
            _write_info(folder, info)
        return Result(paths, info)

    def continue_video(
        self,
        video: str | Path,
        request: SamplingConfig | None = None,
        /,
        *,
        progress: ProgressFn | None = None,
        owner: str | None = None,
        **fields: Any,
    ) -> Result:
        """Continue an uploaded video by `request.frames` frames (default two clips), one
        continuation; returns [given, given + continuation]."""
        request = (request or SamplingConfig(frames=2 * self.clip_frames)).replace(**fields)
        request = self._resolve(request.replace(num=1, seeds=None, labels=None))
        given, total = self._read_upload(Path(video))
        with self._job(progress, owner) as (folder, started, on_step):
            generated = self.pipe(request, context=given[None], callback=on_step, progress=False)
            full = torch.cat([given[None], generated], dim=2)
            paths = [
                self._write(folder / "given.mp4", given),
                self._write(folder / f"continued-{request.seed}.mp4", full[0]),
            ]
            info = {
                "action": "continue",
                "upload_frames": total,
                "given_frames": int(given.shape[1]),
                "generated_frames": int(generated.shape[2]),
                "resolution": self.resolution,
                **request.record(),
                "frames": int(full.shape[2]),
                "seconds": round(time.perf_counter() - started, 2),
            }
            _write_info(folder, info)
        return Result(paths, info)

    # ---- helpers ---------------------------------------------------------------------
    def _resolve(self, request: SamplingConfig) -> SamplingConfig:
        """The request checked against the model and the page's limits."""
        request = self.pipe.resolve(request)
        lim = self.limits
        if not 1 <= request.num <= lim.max_videos:
            raise PvdmError(f"number of videos must be 1..{lim.max_videos}, got {request.num}")
        if not 1 <= request.frames <= lim.max_frames:
            raise PvdmError(f"frames must be 1..{lim.max_frames}, got {request.frames}")
        return request

    def _read_upload(self, path: Path) -> tuple[torch.Tensor, int]:
        """The last frames of an upload (as many as it has, at most the page's limit) at the
        model's resolution, uint8 [C, T, H, W]; and the upload's frame count."""
        from pvdm.data import read_video
        from pvdm.data.decode import ReadError, probe

        lim, clip = self.limits, self.clip_frames
        name = path.name
        try:
            info = probe(path)
        except (ReadError, OSError) as e:
            raise DataError(f"cannot read the uploaded video {name}: {e}") from None
        except Exception as e:  # a decoder failing in an unforeseen way is still a bad upload
            raise DataError(f"cannot read the uploaded video {name} ({type(e).__name__})") from None
        if info.num_frames < clip:
            raise DataError(
                f"the uploaded video has {info.num_frames} frames; continuing needs at least {clip}"
            )
        if (
            info.num_frames > lim.max_upload_frames
            or info.height * info.width > lim.max_upload_pixels
        ):
            raise DataError(
                f"the uploaded video is too large ({info.num_frames} frames of {info.width}x"
                f"{info.height}); the limit is {lim.max_upload_frames} frames of at most "
                f"{lim.max_upload_pixels} pixels: trim or downscale it"
            )
        keep = min(info.num_frames, max(clip, lim.max_frames))
        try:
            # each frame is cropped and resized as it decodes: memory follows the model's size
            video = read_video(path, start=info.num_frames - keep, resolution=self.resolution)
        except PvdmError as e:
            raise DataError(f"cannot read the uploaded video {name}: {e}") from None
        return video, info.num_frames

    def _write(self, path: Path, video: torch.Tensor) -> Path:
        from pvdm.data import write_video

        write_video(path, video, fps=self.fps)
        return path

    @contextlib.contextmanager
    def _job(
        self, progress: ProgressFn | None, owner: str | None
    ) -> Iterator[tuple[Path, float, Callable[[dict[str, Any]], None]]]:
        """Run one job: a fresh folder, the step callback (progress and cancel), cleanup."""
        with self._lock:
            self._cancel.clear()
            self._owner = owner or "anyone"
            # named by time first, so that pruning by name removes the oldest across restarts
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = self.out_dir / f"job-{stamp}-{os.getpid()}-{next(self._jobs):05d}"
            folder.mkdir(parents=True)
            self._prune()

            def on_step(info: dict[str, Any]) -> None:
                if self._cancel.is_set():
                    raise Cancelled("the job was cancelled")
                if progress is not None:
                    progress(info["fraction"], f"clip {info['clip'] + 1}/{info['num_clips']}")

            try:
                if progress is not None:
                    progress(0.0, "clip 1")
                yield folder, time.perf_counter(), on_step
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            finally:
                self._owner = None

    def _prune(self) -> None:
        jobs = sorted(p for p in self.out_dir.glob("job-*") if p.is_dir())
        for old in jobs[: max(0, len(jobs) - self.limits.keep_jobs)]:
            shutil.rmtree(old, ignore_errors=True)


def prepare_out_dir(path: str | Path) -> Path:
    """An output folder for serve: a new or empty one (then marked as serve's) or one serve
    marked before. Any other folder is refused: the page serves all of it and prunes its
    `job-*` folders."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PvdmError(f"--out {path} is a file; give a new or empty folder")
    if (path / OUT_MARKER).is_file():
        return path
    if path.is_dir() and any(path.iterdir()):
        raise PvdmError(
            f"--out {path} holds files pvdm serve did not write (the page would serve the whole "
            "folder and prune its job-* folders); give a new or empty folder"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / OUT_MARKER).write_text("an output folder of pvdm serve\n")
    except OSError as e:
        raise PvdmError(
            f"cannot create the output folder --out {path} ({e.strerror or e})"
        ) from None
    return path


def _write_info(folder: Path, info: dict[str, Any]) -> None:
    from pvdm.atomic import atomic_write_text

    atomic_write_text(folder / "settings.json", json.dumps(info, indent=2))
