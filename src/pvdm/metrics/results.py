"""Result records: `metric-<name>.jsonl` lines (StyleGAN-V's files), the printed table, hashes.

Every evaluation appends one JSON line per protocol to `metric-<protocol name>.jsonl`, as
StyleGAN-V does, with everything needed to say how the number was measured: the protocol's
settings, the real and fake sample counts, the data, the model and detector hashes, the
sampler settings and a timestamp. Values that JSON cannot hold (inf PSNR of a perfect
reconstruction, NaN) are written as the strings "inf", "-inf", "nan".
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pvdm import __version__
from pvdm.jsonl import append_line, read_lines
from pvdm.metrics.protocols import Protocol
from pvdm.runs import resolve_snapshot
from pvdm.weights import file_sha256

log = logging.getLogger(__name__)


def make_record(
    protocol: Protocol,
    results: Mapping[str, float],
    *,
    num_real: int,
    num_fake: int,
    total_time_sec: float,
    world_size: int = 1,
    **sections: Any,
) -> dict[str, Any]:
    """One result record: metric name, values, protocol, counts, `sections`, time and version."""
    now = time.time()
    return {
        "metric": protocol.name,
        "results": dict(results),
        "num_real": num_real,
        "num_fake": num_fake,
        "protocol": dataclasses.asdict(protocol),
        **sections,
        "world_size": world_size,
        "total_time_sec": round(total_time_sec, 3),
        "timestamp": round(now, 3),
        "date": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "pvdm_version": __version__,
    }


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as strings, tuples as lists and paths as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def metric_file(outdir: str | os.PathLike, metric: str) -> Path:
    """`outdir/metric-<metric>.jsonl`."""
    return Path(outdir) / f"metric-{metric}.jsonl"


def append_record(outdir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Append `record` as one line to its `metric-<name>.jsonl`; returns the file.

    The line goes out in one O_APPEND write and is fsynced, so lines of concurrent writers do
    not interleave and earlier lines are never rewritten; a failed write (full disk) leaves no
    half line (see pvdm.jsonl).
    """
    path = metric_file(outdir, record["metric"])
    append_line(path, json_safe(record), allow_nan=False)
    return path


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metric file, oldest first; lines that do not parse are skipped."""
    return read_lines(path)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        text = f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"
        return "0.0000" if text == "-0.0000" else text  # FVD of equal sets rounds either way
    return str(value)


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table: one row per value (IS as mean ± std), with counts and time."""
    rows = [("metric", "value", "real", "fake", "time")]
    for record in records:
        results = record["results"]
        for key, value in results.items():
            if key.endswith("_std") and key[: -len("_std")] in results:
                continue  # shown with its mean
            name = key if key == record["metric"] else f"{record['metric']} {key}"
            text = _format_value(value)
            if f"{key}_std" in results:
                text += f" ± {_format_value(results[f'{key}_std'])}"
            real = str(record["num_real"]) if record["num_real"] else "-"
            rows.append(
                (name, text, real, str(record["num_fake"]), f"{record['total_time_sec']:.1f}s")
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _weights_sha256(path: Path) -> str | None:
    target = resolve_snapshot(path)
    weights = target if target.is_file() else target / "model.safetensors"
    return file_sha256(weights) if weights.is_file() else None


def model_sha256(path: str | os.PathLike) -> dict[str, str | None]:
    """SHA-256 of the weights a model path loads (`sha256sum`-comparable).

    A pipeline folder (`pipeline.json`) gives its UNet and autoencoder; a run folder or
    pretrained folder its best or newest snapshot (`model`).
    """
    path = Path(path)
    spec_file = path / "pipeline.json"
    if spec_file.is_file():
        from pvdm.diffusion.pipeline import read_pipeline_spec

        spec = read_pipeline_spec(spec_file)
        return {part: _weights_sha256(path / spec[part]) for part in ("unet", "autoencoder")}
    return {"model": _weights_sha256(path)}
