"""benchmarks/models.py runs end to end on the tiny presets and writes its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "models.py"


@pytest.mark.slow  # the benchmark times training steps in fresh subprocesses
def test_benchmark_smoke_run(tmp_path) -> None:
    out = tmp_path / "models.json"
    args = "--ae-preset debug --unet-preset debug --only ae-b1-fp32-sdpa --only ae-b1-fp32-math"
    args += f" --repeats 1 --warmup 0 --out {out}"
    cmd = [sys.executable, str(SCRIPT), *args.split()]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["results"]] == ["ae-b1-fp32-sdpa", "ae-b1-fp32-math"]
    for result in report["results"]:
        assert "error" not in result, result
        assert result["forward_sec"] > 0 and result["train_step_sec"] > 0
        assert 0 < result["forward_peak_gb"] <= result["train_peak_gb"]
    assert list(report["summary"]["sdpa_speedup_over_math"]) == ["ae-b1-fp32-sdpa"]
