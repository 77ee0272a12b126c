"""benchmarks/diffusion.py reads a run's stats.jsonl through pvdm.jsonl (a torn line is skipped)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "diffusion.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_diffusion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_rate_is_read_past_a_torn_last_line(tmp_path) -> None:
    stats = tmp_path / "stats.jsonl"
    rows = [{"step": 5, "steps_per_sec": 1.5}, {"step": 6, "loss": 0.1}]
    rows += [{"step": 10, "steps_per_sec": 2.25}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    stats.write_text(text + '{"step": 11, "steps_per')  # a full disk tore the last write
    assert _benchmark().last_steps_per_sec(stats) == 2.25
