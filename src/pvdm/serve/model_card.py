"""What a served model is, as Markdown: its networks, its training, its evaluation results.

Reads only the model folder the server was started with (never a path from the page): the
pipeline description, the run's `config.yaml` and `stats.jsonl`, its snapshots, the latest
record of each `metric-*.jsonl`, and the FVD ladder when there is one: `quality-ladder.json`
(what benchmarks/quality.py writes) in the folder or its parent, or the `demo.json` of a
`pvdm demo` whose `diffusion` run the folder is. A file that cannot be read shows as missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from pvdm.diffusion.pipeline import PIPELINE_FILE, PVDMPipeline, read_pipeline_spec
from pvdm.errors import PvdmError
from pvdm.jsonl import parse_json, read_lines

LADDER_FILE = "quality-ladder.json"


def model_card(pipe: PVDMPipeline, folder: str | Path) -> str:
    """A Markdown summary of the pipeline loaded from `folder`."""
    folder = Path(folder)
    try:
        spec = read_pipeline_spec(folder / PIPELINE_FILE)
    except PvdmError:  # the pipeline was loaded from it; a file changed since is shown as '?'
        spec = {}
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
    run = _read_yaml(folder / "config.yaml")
    if run:
        data, train = _section(run, "data"), _section(run, "train")
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
        results = rec.get("results")
        if isinstance(results, dict):
            results = ", ".join(f"{k} {_num(v)}" for k, v in results.items())
        else:  # not what pvdm eval writes: shown as it is
            results = _num(results) if results is not None else ""
        counts = f"{rec.get('num_fake', '?')} / {rec.get('num_real', '?')}"
        name = rec.get("metric", path.stem.removeprefix("metric-"))
        rows.append(f"| {name} | {results} | {counts} | {rec.get('date', '')} |")
    return rows


def _ladder(folder: Path) -> list[str]:
    """The FVD ladder table of the first ladder found (see the module docstring)."""
    for path in (folder / LADDER_FILE, folder.parent / LADDER_FILE, folder.parent / "demo.json"):
        data = _read_json(path)
        if not isinstance(data, dict):
            continue
        if path.name == "demo.json":
            data = (data.get("metrics") or {}).get("fvd")
            if not isinstance(data, dict) or folder.name != "diffusion":
                continue
        rows = _rungs(data.get("rungs"))
        if rows:
            return _ladder_table(path, rows, data)
    return []


def _rungs(rungs: Any) -> list[dict[str, Any]]:
    """Rows {name, fvd, clips, psnr, ssim} of a ladder's rungs: a list of records (quality.py)
    or a mapping name -> {"fvd", "num"} (pvdm.metrics.ladder.fvd_ladder, the demo)."""
    if isinstance(rungs, dict):
        rungs = [
            {"name": k, **v} if isinstance(v, dict) else {"name": k, "fvd": v}
            for k, v in rungs.items()
        ]
    if not isinstance(rungs, list):
        return []
    rows = []
    for r in rungs:
        if isinstance(r, dict) and "fvd" in r:
            rows.append(
                {
                    "name": r.get("name", "?"),
                    "fvd": r["fvd"],
                    "clips": r.get("num", r.get("clips", "")),
                    "psnr": r.get("psnr_db", r.get("psnr", "")),
                    "ssim": r.get("ssim", ""),
                }
            )
    return rows


def _ladder_table(path: Path, rows: list[dict[str, Any]], data: dict[str, Any]) -> list[str]:
    out = ["", f"#### FVD ladder (`{path.parent.name}/{path.name}`)", ""]
    detector = data.get("detector")
    if isinstance(detector, dict) and detector.get("name"):
        out += [f"Detector: `{detector['name']}`.", ""]
    out += ["| rung | FVD | clips | PSNR (dB) | SSIM |", "|---|---|---|---|---|"]
    out += [
        "| " + " | ".join(_num(r[k]) for k in ("name", "fvd", "clips", "psnr", "ssim")) + " |"
        for r in rows
    ]
    drift = data.get("drift")
    curve = drift.get("fvd") if isinstance(drift, dict) else None
    if isinstance(curve, list) and curve:
        frames = drift.get("window_frames", 16)
        out += [
            "",
            f"Drift (FVD of each {frames}-frame window along long videos): "
            + ", ".join(_num(v) for v in curve),
        ]
    return out


def _last_jsonl(path: Path, key: str) -> dict[str, Any] | None:
    """The last record of a JSON-lines file that has `key` (None if unreadable or absent)."""
    try:
        rows = read_lines(path)
    except OSError:
        return None
    return next((r for r in reversed(rows) if key in r), None)


def _read_json(path: Path) -> Any:
    try:
        return parse_json(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _read_yaml(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping; {} when it is missing, unreadable or not a mapping."""
    import yaml

    try:
        run = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return {}
    return run if isinstance(run, dict) else {}


def _section(run: dict[str, Any], name: str) -> dict[str, Any]:
    """A section of a run config, {} unless it is a mapping."""
    value = run.get(name)
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
