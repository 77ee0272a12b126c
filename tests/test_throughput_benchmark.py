"""benchmarks/throughput.py: FLOP counts against known answers, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "throughput.py"


def _steps():
    spec = importlib.util.spec_from_file_location("benchmark_steps", BENCHMARKS / "steps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--out", str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_flop_count_of_a_linear_layer_and_of_cpu_attention() -> None:
    steps = _steps()
    linear = torch.nn.Linear(24, 40, bias=False)
    x = torch.randn(5, 24)
    assert steps.count_flops(lambda: linear(x)) == 2 * 5 * 24 * 40
    # scaled-dot-product attention on the CPU: PyTorch's table misses these kernels
    b, h, n, e = 2, 3, 16, 8
    q = torch.randn(b, h, n, e, requires_grad=True)
    product = 2 * b * h * n * n * e  # one [n, e] x [e, n] (or [n, n] x [n, e]) product per head
    assert steps.count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 2 * product
    both = steps.count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    assert both == 7 * product  # PyTorch's backward formula: recomputed scores + four gradients


def test_tiny_run_writes_flops_times_and_utilisation(tmp_path) -> None:
    report = _run(tmp_path, "--repeats", "1", "--warmup", "0", "--peak-repeats", "1")
    assert report["threads"] == 1 and report["torch"] == torch.__version__
    assert report["cpu_model"] and "FlopCounterMode" in report["flops_counted"]
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == [
        "peak-matmul-512-start",
        "peak-conv2d-b2-c64-32-start",
        "ae-train-demo",
        "dm-train-demo",
        "sample-demo",
        "peak-matmul-512-end",
        "peak-conv2d-b2-c64-32-end",
    ]
    for name in ("peak-matmul-512-start", "peak-matmul-512-end"):
        assert rows[name]["flops"] == 2 * 512**3
    for name in ("peak-conv2d-b2-c64-32-start", "peak-conv2d-b2-c64-32-end"):
        assert rows[name]["flops"] == 2 * 2 * 64 * 64 * 9 * 32 * 32
    peak = report["peak"]
    assert peak["best_flops_per_sec"] == max(
        peak["matmul_flops_per_sec"], peak["conv2d_flops_per_sec"]
    )
    for row in rows.values():
        assert row["flops"] > 0 and row["sec_median"] > 0
        assert row["flops_per_sec"] == pytest.approx(row["flops"] / row["sec_median"])
        assert 0 < row["util_best_pct"] <= 100 + 1e-9
        assert row["util_best_pct"] <= min(row["util_matmul_pct"], row["util_conv_pct"]) + 1e-9
        assert row["load_avg_before"] >= 0 and row["load_avg_after"] >= 0
    # the fastest peak row is the peak itself
    assert max(r["util_best_pct"] for r in rows.values()) == pytest.approx(100)
    ae, dm, sample = rows["ae-train-demo"], rows["dm-train-demo"], rows["sample-demo"]
    assert (ae["batch"], ae["video"], ae["lpips"]) == (2, [3, 8, 32, 32], False)
    assert (dm["batch"], dm["latent_shape"], sample["batch"]) == (4, [4, 8, 8, 8], 2)
    # a training step (forward + backward) costs more than a forward at half its batch
    assert dm["flops"] > 2 * sample["flops"]


@pytest.mark.slow
def test_compare_workers_reports_both_layouts(tmp_path) -> None:
    report = _run(
        tmp_path, "--only", "none", "--repeats", "1", "--peak-repeats", "1",
        "--compare-workers", "2", "--window", "0.2",
    )  # fmt: skip
    assert [r["kind"] for r in report["results"]] == ["peak"] * 4
    assert [c["step"] for c in report["compare_workers"]] == ["ae-train-demo", "dm-train-demo"]
    for cmp in report["compare_workers"]:
        one, many = cmp["one_process"], cmp["processes"]
        assert (one["processes"], one["threads_per_process"]) == (1, 2)
        assert (many["processes"], many["threads_per_process"]) == (2, 1)
        assert len(many["per_process"]) == 2 and all(r["steps"] >= 1 for r in many["per_process"])
        assert cmp["processes_over_one_process"] == pytest.approx(
            many["samples_per_sec"] / one["samples_per_sec"]
        )
        split = cmp["processes_split_batch"]  # what --workers trains: the batch split
        assert split["processes"] == 2 and split["batch"] == one["batch"] // 2
        assert cmp["split_over_one_process"] == pytest.approx(
            split["samples_per_sec"] / one["samples_per_sec"]
        )
        assert one["samples_per_sec"] > 0 and many["samples_per_sec"] > 0
    assert report["compare_workers"][0]["one_process"]["batch"] == 2  # the tiny autoencoder batch


def test_a_compiled_row_times_its_first_call_and_takes_the_eager_rows_flops(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its `steps` module
    spec = importlib.util.spec_from_file_location("benchmark_throughput", SCRIPT)
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    steps = throughput.steps
    linear = torch.nn.Linear(24, 40, bias=False)
    x = torch.randn(5, 24)
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        linear(x)

    cpu = torch.device("cpu")
    compiled = steps.Step("lin-compiled", fn, 5, {"compiled": True})
    with pytest.raises(SystemExit, match="run its eager row too"):
        throughput.measure(compiled, 1, 0, cpu)
    assert not calls
    eager = throughput.measure(steps.Step("lin", fn, 5, {}), 2, 0, cpu)
    assert eager["flops"] == 2 * 5 * 24 * 40 and "first_call_sec" not in eager
    calls.clear()
    row = throughput.measure(compiled, 2, 1, cpu)
    assert row["flops"] == eager["flops"] and row["first_call_sec"] >= 0
    assert len(calls) == 1 + 1 + 2  # the first call, the warm-up, the timed calls
