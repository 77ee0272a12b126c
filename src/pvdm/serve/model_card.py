"""What a served model is, as Markdown: its networks, its training, its evaluation results.

Reads only the model folder the server was started with (never a path from the page): the
pipeline description, the run's `config.yaml` and `stats.jsonl`, its snapshots, the latest
record of each `metric-*.jsonl`, and a quality ladder (`*ladder*.json`/`.jsonl`) when the run
has one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from pvdm.diffusion.pipeline import PIPELINE_FILE, PVDMPipeline


def model_card(pipe: PVDMPipeline, folder: str | Path) -> str:
    """A Markdown summary of the pipeline loaded from `folder`."""
    folder = Path(folder)
    spec = _read_json(folder / PIPELINE_FILE) or {}
    unet, ae = pipe.unet, pipe.autoencoder
    ae_cfg = ae.config
    lines = [
        f"| model | `{folder}` |",
        "|---|---|",
        f"| device | `{pipe.device}` |",
        f"| video | {ae_cfg.frames} frames per clip at {ae_cfg.resolution}x{ae_cfg.resolution} |",
        f"| UNet | {_millions(unet)} parameters |",
        f"| autoencoder | {_millions(ae)} parameters, from `{spec.get('autoencoder', '?')}` |",
        f"| classes | {_classes(pipe)} |",
        f"| frame-conditional | {getattr(unet.config, 'frame_conditional', '?')} |",
        f"| noise schedule | {pipe.schedule.num_timesteps} steps |",
    ]
    lines += _training(folder)
    lines += ["", "#### UNet config", "", _config_table(unet.config)]
    lines += ["", "#### Autoencoder config", "", _config_table(ae_cfg)]
    lines += _metrics(folder)
    lines += _ladder(folder)
    return "\n".join(lines)


def _millions(module: Any) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


def _classes(pipe: PVDMPipeline) -> str:
    num = getattr(pipe.unet.config, "num_classes", None)
    if num is None:
        return "none (unconditional)"
    names = ", ".join(pipe.classes or [])
    return f"{num}: {names}" if names else str(num)


def _config_table(config: Any) -> str:
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    rows = ["| field | value |", "|---|---|"]
    rows += [f"| {k} | `{json.dumps(v)}` |" for k, v in values.items()]
    return "\n".join(rows)


def _training(folder: Path) -> list[str]:
    """Training steps and settings of a run folder (nothing for a converted checkpoint)."""
    lines = []
    snapshots = sorted(p.name for p in (folder / "snapshots").glob("step-*") if p.is_dir())
    stats = _last_jsonl(folder / "stats.jsonl", "step")
    if stats or snapshots:
        step = stats.get("step") if stats else None
        lines.append(f"| training steps | {step if step is not None else '?'} |")
    if snapshots:
        lines.append(f"| snapshots | {len(snapshots)}, latest `{snapshots[-1]}` |")
    if stats and "loss" in stats:
        lines.append(f"| last loss | {_num(stats['loss'])} |")
    config = folder / "config.yaml"
    if config.is_file():
        import yaml

        try:
            run = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError:
            run = {}
        data, train = run.get("data") or {}, run.get("train") or {}
        if data.get("path") is not None:
            lines.append(f"| data | `{data.get('path')}` |")
        if train:
            lines.append(
                f"| training | batch {train.get('batch_size')}, lr {train.get('lr')}, "
                f"{train.get('precision')}, EMA {train.get('use_ema')} |"
            )
    return lines


def _metrics(folder: Path) -> list[str]:
    files = sorted(folder.glob("metric-*.jsonl"))
    if not files:
        return ["", "#### Evaluation", "", "No `metric-*.jsonl` results in this folder yet."]
    rows = ["", "#### Evaluation (latest result of each metric)", ""]
    rows += ["| metric | results | fake / real | date |", "|---|---|---|---|"]
    for path in files:
        rec = _last_jsonl(path, "results")
        if not rec:
            continue
        results = ", ".join(f"{k} {_num(v)}" for k, v in (rec.get("results") or {}).items())
        counts = f"{rec.get('num_fake', '?')} / {rec.get('num_real', '?')}"
        name = rec.get("metric", path.stem.removeprefix("metric-"))
        rows.append(f"| {name} | {results} | {counts} | {rec.get('date', '')} |")
    return rows


def _ladder(folder: Path) -> list[str]:
    files = sorted([*folder.glob("*ladder*.json"), *folder.glob("*ladder*.jsonl")])
    out = []
    for path in files:
        rows = _rows(path)
        if not rows:
            continue
        keys = list(dict.fromkeys(k for r in rows for k in r))
        out += ["", f"#### Quality ladder (`{path.name}`)", ""]
        out += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join(_num(r.get(k, "")) for k in keys) + " |" for r in rows]
    return out


def _rows(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON list / JSON-lines file (unreadable lines skipped)."""
    if path.suffix == ".jsonl":
        rows = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    else:
        data = _read_json(path)
        rows = data if isinstance(data, list) else (data or {}).get("rungs", [])
    return [r for r in rows if isinstance(r, dict)]


def _last_jsonl(path: Path, key: str) -> dict[str, Any] | None:
    """The last record of a JSON-lines file that has `key`."""
    if not path.is_file():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and key in rec:
            return rec
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
