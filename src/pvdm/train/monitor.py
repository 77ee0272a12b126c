"""Training progress: a progress bar (terminal) or periodic lines, stats.jsonl, TensorBoard.

Only rank 0 writes. Values are averaged over the steps since the last report; every report also
records the step rate, samples per second, elapsed time, ETA and peak memory.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from pvdm.jsonl import append_line

log = logging.getLogger(__name__)


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocations on a GPU, the process's max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def format_duration(seconds: float) -> str:
    """Seconds as `1h02m03s` / `2m03s` / `3s`."""
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Monitor:
    """Collects per-step values and reports them every `log_every` steps."""

    def __init__(
        self,
        stats_path: Path | None,
        *,
        start_step: int,
        max_steps: int,
        device: torch.device,
        tensorboard_dir: Path | None = None,
        progress_bar: bool | None = None,
        desc: str = "train",
    ):
        self.stats_path = stats_path
        self.device = device
        self.max_steps = max_steps
        self.last_step = start_step
        self.last_time = time.perf_counter()
        self.start_time = self.last_time
        self.start_step = start_step
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.samples = 0
        self.writer = _tensorboard_writer(tensorboard_dir) if tensorboard_dir else None
        if progress_bar is None:
            progress_bar = stats_path is not None and sys.stderr.isatty()
        self.bar = None
        if progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, desc=desc, unit="step")

    def add(self, values: dict[str, float], samples: int = 0) -> None:
        """Record one step's values (e.g. losses) and how many samples it consumed."""
        for k, v in values.items():
            self.sums[k] += float(v)
            self.counts[k] += 1
        self.samples += samples

    def report(self, step: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write a stats line with means since the last report; returns it."""
        now = time.perf_counter()
        steps = step - self.last_step
        elapsed = now - self.last_time
        row: dict[str, Any] = {"step": step}
        row.update({k: self.sums[k] / self.counts[k] for k in self.sums})
        if extra:
            row.update(extra)
        rate = steps / elapsed if steps > 0 and elapsed > 0 else 0.0
        row["steps_per_sec"] = rate
        row["samples_per_sec"] = self.samples / elapsed if elapsed > 0 else 0.0
        row["elapsed_sec"] = now - self.start_time
        row["peak_memory_gb"] = peak_memory_gb(self.device)
        row["time"] = time.time()
        eta = (self.max_steps - step) / rate if rate > 0 else float("nan")
        self._write(row, eta)
        self.sums.clear()
        self.counts.clear()
        self.samples = 0
        self.last_step, self.last_time = step, now
        return row

    def log_values(self, step: int, values: dict[str, float]) -> None:
        """Write values measured at `step` (e.g. an evaluation) as their own stats line."""
        row = {"step": step, **values, "time": time.time()}
        if self.stats_path is not None:
            append_line(self.stats_path, row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        text = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        if self.bar is not None:
            self.bar.write(f"step {step}: {text}")
        elif self.stats_path is not None:
            log.info("step %d: %s", step, text)

    def _write(self, row: dict[str, Any], eta: float) -> None:
        if self.stats_path is None:
            return
        append_line(self.stats_path, row)
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self.writer.add_scalar(k, v, row["step"])
            self.writer.flush()
        shown = {k: v for k, v in row.items() if k not in ("step", "time", "elapsed_sec")}
        text = " ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        if self.bar is not None:
            self.bar.n = row["step"]
            self.bar.set_postfix_str(text[:120], refresh=True)
        else:
            eta_text = format_duration(eta) if eta == eta else "?"
            log.info("step %d/%d %s eta=%s", row["step"], self.max_steps, text, eta_text)

    def add_video(self, tag: str, video: torch.Tensor, step: int, fps: int = 8) -> None:
        """Log a uint8 video batch [B, C, T, H, W] to TensorBoard, if it is available."""
        if self.writer is not None:
            # TensorBoard wants [N, T, C, H, W]
            self.writer.add_video(tag, video.permute(0, 2, 1, 3, 4).cpu(), step, fps=fps)

    def close(self) -> None:
        """Close the progress bar and the TensorBoard writer."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


_notified = False


def _tensorboard_writer(folder: Path):
    global _notified
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _notified:
            log.info(
                "TensorBoard is not installed; logging to stats.jsonl only (pip install tensorboard)"
            )
            _notified = True
        return None
    return SummaryWriter(str(folder))
