"""The work behind the serve page: sampling and continuing videos with one loaded pipeline.

Web-free, so it is testable on its own. One job runs at a time (the page queues the rest): a
forward hook on the UNet counts denoiser evaluations, which drives the progress bar (the
sampler's steps and the clips) and lets a cancel request stop the job at the next step.
Outputs go to the studio's own folder, one subfolder per job, oldest pruned.
"""

from __future__ import annotations

import bisect
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
from pvdm.diffusion.samplers import DEFAULT_ETA, resolve_steps
from pvdm.errors import DataError, PvdmError

# The fast solver first: it is the default of the page and of the API.
DEFAULT_SAMPLER = "dpm"
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
        self.fps = fps
        self.limits = limits or Limits()
        self._cancel = threading.Event()
        self._lock = threading.Lock()  # one job at a time, whatever calls us
        self._jobs = itertools.count(1)

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
        """The steps `sampler` runs when none are given (pvdm.diffusion.resolve_steps)."""
        return resolve_steps(sampler, None, self.pipe.schedule.num_timesteps)

    def cancel(self) -> None:
        """Ask the running job (if any) to stop at its next denoising step."""
        self._cancel.set()

    # ---- jobs ------------------------------------------------------------------------
    def sample(
        self,
        num: int = 1,
        frames: int | None = None,
        *,
        sampler: str = DEFAULT_SAMPLER,
        steps: int | None = None,
        eta: float = DEFAULT_ETA,
        seed: int = 0,
        label: str | None = None,
        class_guidance: float = 0.0,
        guidance: float = 0.0,
        progress: ProgressFn | None = None,
    ) -> Result:
        """`num` videos of `frames` frames (default one clip); video i uses seed + i."""
        frames = int(frames or self.clip_frames)
        num = int(num)
        self._check_counts(num, frames)
        steps = self._steps(sampler, steps)
        label = None if label in (None, "", NO_CLASS) else label
        labels = [label] if label is not None else None
        seeds = [int(seed) + i for i in range(num)]
        num_clips = -(-frames // self.clip_frames)
        calls = [
            self._calls(sampler, steps, k > 0, guidance, labels, class_guidance)
            for k in range(num_clips)
        ]
        with self._job(calls, num_clips, progress) as (folder, started):
            videos = self.pipe(
                num,
                frames,
                seeds=seeds,
                labels=labels,
                sampler=sampler,
                steps=steps,
                eta=float(eta),
                guidance=float(guidance),
                class_guidance=float(class_guidance) if labels else 0.0,
                batch_size=num,
                progress=False,
            )
            paths = [self._write(folder / f"sample-{s}.mp4", v) for s, v in zip(seeds, videos)]
            info = {
                "action": "sample",
                "videos": num,
                "frames": int(videos.shape[2]),
                "clips_per_video": num_clips,
                "sampler": sampler,
                "steps": steps,
                "eta": float(eta) if sampler == "ddim" else None,
                "frame_guidance": float(guidance),
                "class": label,
                "class_guidance": float(class_guidance) if labels else None,
                "seeds": seeds,
                "seconds": round(time.perf_counter() - started, 2),
            }
            _write_info(folder, info)
        return Result(paths, info)

    def continue_video(
        self,
        video: str | Path,
        frames: int | None = None,
        *,
        sampler: str = DEFAULT_SAMPLER,
        steps: int | None = None,
        eta: float = DEFAULT_ETA,
        seed: int = 0,
        guidance: float = 0.0,
        progress: ProgressFn | None = None,
    ) -> Result:
        """Continue an uploaded video by `frames` frames; returns [given, given + continuation]."""
        frames = int(frames or 2 * self.clip_frames)
        self._check_counts(1, frames)
        steps = self._steps(sampler, steps)
        given, total = self._read_upload(Path(video))
        num_clips = -(-frames // self.clip_frames)
        calls = [self._calls(sampler, steps, True, guidance, None, 0.0) for _ in range(num_clips)]
        with self._job(calls, num_clips, progress) as (folder, started):
            generated = self.pipe(
                1,
                frames,
                seeds=[int(seed)],
                sampler=sampler,
                steps=steps,
                eta=float(eta),
                guidance=float(guidance),
                context=given[None],
                progress=False,
            )
            full = torch.cat([given[None], generated], dim=2)
            paths = [
                self._write(folder / "given.mp4", given),
                self._write(folder / f"continued-{seed}.mp4", full[0]),
            ]
            info = {
                "action": "continue",
                "upload_frames": total,
                "given_frames": int(given.shape[1]),
                "generated_frames": int(generated.shape[2]),
                "frames": int(full.shape[2]),
                "resolution": self.resolution,
                "sampler": sampler,
                "steps": steps,
                "eta": float(eta) if sampler == "ddim" else None,
                "frame_guidance": float(guidance),
                "seeds": [int(seed)],
                "seconds": round(time.perf_counter() - started, 2),
            }
            _write_info(folder, info)
        return Result(paths, info)

    # ---- helpers ---------------------------------------------------------------------
    def _check_counts(self, num: int, frames: int) -> None:
        lim = self.limits
        if not 1 <= num <= lim.max_videos:
            raise PvdmError(f"number of videos must be 1..{lim.max_videos}, got {num}")
        if not 1 <= frames <= lim.max_frames:
            raise PvdmError(f"frames must be 1..{lim.max_frames}, got {frames}")

    def _steps(self, sampler: str, steps: int | float | None) -> int:
        """pvdm.diffusion.resolve_steps, except that ddpm ignores a step count from the page
        (ancestral sampling visits every timestep; the page's slider still holds a number)."""
        if sampler == "ddpm":
            steps = None
        return resolve_steps(
            sampler, int(steps) if steps else None, self.pipe.schedule.num_timesteps
        )

    def _calls(self, sampler, steps, has_cond, guidance, labels, class_guidance) -> int:
        """UNet evaluations of one clip (frame and class guidance each add one per step)."""
        per_step = 1 + int(has_cond and guidance != 0) + int(bool(labels) and class_guidance != 0)
        return steps * per_step

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
        self, calls: list[int], num_clips: int, progress: ProgressFn | None
    ) -> Iterator[tuple[Path, float]]:
        """Run one job: a fresh folder, the progress/cancel hook on the UNet, cleanup."""
        with self._lock:
            self._cancel.clear()
            # named by time first, so that pruning by name removes the oldest across restarts
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = self.out_dir / f"job-{stamp}-{os.getpid()}-{next(self._jobs):05d}"
            folder.mkdir(parents=True)
            self._prune()
            total, bounds = sum(calls), list(itertools.accumulate(calls))
            done = 0

            def hook(module, args, output):
                nonlocal done
                if self._cancel.is_set():
                    raise Cancelled("the job was cancelled")
                done += 1
                if progress is not None:
                    clip = min(bisect.bisect_left(bounds, done), num_clips - 1)
                    progress(min(done / max(total, 1), 1.0), f"clip {clip + 1}/{num_clips}")

            handle = self.pipe.unet.register_forward_hook(hook)
            try:
                if progress is not None:
                    progress(0.0, f"clip 1/{num_clips}")
                yield folder, time.perf_counter()
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            finally:
                handle.remove()

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
