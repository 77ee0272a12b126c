"""benchmarks/gpu_check.sh: the CPU stand-in of the CUDA check runs end to end and fails clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pvdm.diffusion import DEFAULT_SAMPLER

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_cpu_tiny_run_writes_every_part(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = _run("--cpu-tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "gpu_check: OK"
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-tiny" and report["errors"] == {}
    assert report["gpu_tests"] is None  # not run without CUDA
    assert report["device"]["type"] == "cpu" and report["device"]["torch"] == torch.__version__
    peak = report["peak"]
    assert peak["bf16_table_tflops"] is None and peak["fp32_matmul_tflops"] > 0

    ae_net, unet_net = report["networks"]
    assert (ae_net["name"], unet_net["name"]) == ("ae-debug-b1-fwd-bwd", "unet-debug-b1-fwd-bwd")
    assert (ae_net["input"], unet_net["input"]) == ([3, 8, 32, 32], [4, 8, 8, 8])
    ae_train, dm_train = report["train"]
    assert ae_train["name"] == "ae-train-ucf101-256" and dm_train["name"] == "dm-train-ucf101-256"
    # the paper autoencoder recipe: 3 micro-batches, LPIPS, activation checkpointing
    assert (ae_train["batch"], ae_train["grad_accum"], ae_train["samples_per_step"]) == (1, 3, 3)
    assert ae_train["lpips"] and ae_train["gradient_checkpointing"]
    assert ae_train["flops"] > 3 * ae_net["flops"]  # + LPIPS and the recomputed forward
    assert (dm_train["batch"], dm_train["grad_accum"]) == (2, 1)
    assert ae_train["paper_run"]["max_steps"] == 85_000
    assert dm_train["paper_run"]["max_steps"] == 850_000
    hours = 850_000 * 64 / dm_train["samples_per_sec"] / 3600
    assert dm_train["paper_run"]["projected_hours_on_this_device"] == pytest.approx(hours)
    for row in report["networks"] + report["train"]:
        assert row["flops"] > 0 and row["sec_median"] > 0 and row["peak_memory_gb"] > 0
        assert row["tflops_per_sec"] == pytest.approx(row["flops"] / row["sec_median"] / 1e12)
        assert row["util_fp32_matmul_pct"] == pytest.approx(
            100 * row["tflops_per_sec"] / peak["fp32_matmul_tflops"]
        )
        assert 0 < row["util_fp32_matmul_pct"] < 1000
        assert row["util_bf16_table_pct"] is None

    sample, projection = report["sample"], report["eval_projection"]
    # one clip with the pipeline's defaults (8 steps); the projection with the protocols' DDIM-400
    shape = {"frames": 8, "resolution": 32, "eta": 1.0}
    want = {"sampler": DEFAULT_SAMPLER, "steps": 8, **shape}
    assert {k: sample[k] for k in want} == want
    want = {"sampler": "ddim", "steps": 400, **shape}
    assert {k: projection[k] for k in want} == want
    assert sample["num"] == 1 and sample["sec"] > 0
    assert projection["clips"] == 2048 and projection["batch"] == 2
    assert projection["projected_sec"] == pytest.approx(1024 * projection["batch_sec"])
    assert set(report["part_sec"]) == {
        "device", "peak", "networks", "train", "sample", "eval_projection"
    }  # fmt: skip


def test_a_failing_part_ends_with_one_line_and_keeps_the_rest(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = _run("--cpu-tiny", "--parts", "device,train", "--ae-run", "nope", "--out", str(out))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu_check: FAILED: train: ValueError: unknown autoencoder run preset")
    report = json.loads(out.read_text())
    assert report["device"]["type"] == "cpu" and report["train"] is None
    assert "'nope'" in report["errors"]["train"] and "networks" not in report


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_without_cuda_the_check_says_what_to_run() -> None:
    proc = _run()
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "gpu_check: FAILED: torch sees no CUDA device; on a CPU machine run: "
        "bash benchmarks/gpu_check.sh --cpu-tiny"
    )
