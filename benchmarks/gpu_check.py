"""The measurements of benchmarks/gpu_check.sh: PVDM at the paper's size on one CUDA device.

On a CUDA machine run the shell script (no arguments needed); it runs the CUDA-only tests, then
this file, and writes benchmarks/results/gpu_check.json:

    bash benchmarks/gpu_check.sh                  # or: PYTHON=.venv/bin/python bash ...
    python benchmarks/gpu_check.py --out /tmp/gpu_check.json   # the measurements alone
    python benchmarks/gpu_check.py --cpu-tiny --out /tmp/g.json  # same code, CPU, debug sizes

What it measures (steps from benchmarks/steps.py; FLOPs counted with FlopCounterMode, see
`flops_counted` in the JSON; peak memory = torch.cuda.max_memory_allocated during the timed
calls):
- `peak`: the bf16 dense peak of the device from a table by name (`BF16_DENSE_TFLOPS`), and
  the measured TFLOP/s of one large bf16 and fp32 matmul (fp32 without TF32, torch's default);
- `networks`: forward + backward of the official autoencoder (256 x 256 x 16) and UNet (its
  4 x 16 x 32 x 32 latent) at batch 1 under bf16 autocast;
- `train`: one optimizer step of each stage with the paper run presets (autoencoder
  `ucf101-256`: bf16, activation checkpointing, LPIPS with random weights, 3 micro-batches;
  diffusion `ucf101-256`: fp32, latents in the cached-latent path), at the preset batch or, after
  an out-of-memory error, the largest half of it that fits; the projected length of the paper
  run on this one device (max_steps x the preset's samples per step / samples per second);
- `sample`: one 16-frame 256 x 256 clip with the pipeline's defaults (`pipe(num=1)`: the
  default sampler and steps, fp32), after a 2-step warm-up;
- `eval_projection`: one batch of `--eval-batch` clips with the sampling the FVD protocols pin
  (`pvdm.metrics.sources.reported_sampling`: DDIM, 400 steps, eta 1), and the projected time of
  generating the 2,048 clips of the protocol at that batch (generation only: the I3D features
  of real and fake clips are not included).
Utilisation: `util_bf16_table_pct` against the table's peak, `util_bf16_matmul_pct` against the
measured bf16 matmul, and for fp32 rows `util_fp32_matmul_pct` against the measured fp32 matmul
(fp32 convolutions use TF32 in cuDNN by default, so a convolution-heavy fp32 row can pass 100).

With `--cpu-tiny` the same code runs on the CPU with the debug networks (32 x 32, 8 frames),
batches of 1-2 and fp32, so the test suite can run it. A failure of any part is recorded in the
JSON, the other parts still run, and the script ends with one line `gpu_check: FAILED: ...` and
exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import steps  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peak from the vendor data sheets, TFLOP/s; the first
# name that occurs in torch.cuda.get_device_name() wins, so specific names come first.
BF16_DENSE_TFLOPS = [
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
]
PARTS = ("device", "peak", "networks", "train", "sample", "eval_projection")
EVAL_CLIPS = 2048  # the FVD protocol's generated clips (fvd2048_16f)


@dataclasses.dataclass
class Settings:
    device: torch.device
    ae_model: str  # autoencoder network preset
    unet_model: str
    precision: str | None  # None: the run presets' own
    ae_batch: int | None  # None: the run preset's
    dm_batch: int | None
    net_precision: str
    matmul_n: int
    eval_batch: int
    repeats: int
    warmup: int


def settings(args: argparse.Namespace) -> Settings:
    if args.cpu_tiny:
        return Settings(torch.device("cpu"), "debug", "debug", "fp32", 1, 2, "fp32", 256, 2, 1, 0)
    return Settings(
        torch.device("cuda"), "official", "official", None, args.ae_batch, args.dm_batch,
        "bf16", 8192, args.eval_batch, args.repeats, args.warmup,
    )  # fmt: skip


# ---- measuring ------------------------------------------------------------------------------


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory_gb(device: torch.device) -> float:
    """CUDA: max_memory_allocated since the last reset; CPU: the process's RSS high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measure(step: steps.Step, s: Settings) -> dict:
    """FLOPs (one untimed call), median seconds of the timed calls, their peak memory."""
    flops = steps.count_flops(step.fn)
    reset_peak(s.device)
    times = steps.time_step(step.fn, s.repeats, s.warmup, s.device)
    sec = steps.median(times)
    return {
        "name": step.name,
        **step.info,
        "samples_per_step": step.samples,
        "flops": flops,
        "sec_median": sec,
        "sec_all": times,
        "tflops_per_sec": flops / sec / 1e12,
        "samples_per_sec": step.samples / sec,
        "peak_memory_gb": peak_memory_gb(s.device),
    }


def halving(build: Callable[[int], steps.Step], batch: int, s: Settings) -> dict:
    """`measure(build(batch))`, halving the batch after each CUDA out-of-memory error."""
    requested = batch
    while True:
        try:
            row = measure(build(batch), s)
            return {**row, "batch_requested": requested}
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        free_memory()  # outside the except block: the traceback no longer holds the step
        batch //= 2


def add_utilisation(row: dict, peak: dict) -> None:
    achieved = row["tflops_per_sec"]

    def pct(value: float | None) -> float | None:
        return 100 * achieved / value if value else None

    row["util_bf16_table_pct"] = pct(peak.get("bf16_table_tflops"))
    row["util_bf16_matmul_pct"] = pct(peak.get("bf16_matmul_tflops"))
    if row.get("precision") == "fp32":
        row["util_fp32_matmul_pct"] = pct(peak.get("fp32_matmul_tflops"))


# ---- the parts ------------------------------------------------------------------------------


def device_info(s: Settings) -> dict:
    info: dict[str, Any] = {"type": s.device.type, "torch": torch.__version__}
    if s.device.type == "cuda":
        props = torch.cuda.get_device_properties(s.device)
        info.update(
            name=torch.cuda.get_device_name(s.device),
            capability=list(torch.cuda.get_device_capability(s.device)),
            memory_gb=props.total_memory / 1e9,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            matmul_allow_tf32=getattr(torch.backends.cuda.matmul, "allow_tf32", None),
            cudnn_allow_tf32=getattr(torch.backends.cudnn, "allow_tf32", None),
        )
    else:
        info.update(name=steps.cpu_model(), threads=torch.get_num_threads())
    return info


def measure_peak(s: Settings) -> dict:
    name = torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else ""
    table = next(((k, v) for k, v in BF16_DENSE_TFLOPS if k in name), None)
    peak: dict[str, Any] = {
        "bf16_table_entry": table[0] if table else None,
        "bf16_table_tflops": table[1] if table else None,
        "matmul_n": s.matmul_n,
    }
    dtypes = {"fp32": torch.float32}
    if s.device.type == "cuda":
        dtypes = {"bf16": torch.bfloat16, **dtypes}
    for label, dtype in dtypes.items():
        step = steps.matmul_step(s.matmul_n, dtype, s.device)
        times = steps.time_step(step.fn, 20 if s.device.type == "cuda" else 3, 3, s.device)
        peak[f"{label}_matmul_tflops"] = step.info["flops_formula"] / steps.median(times) / 1e12
        del step
    return peak


def measure_networks(s: Settings) -> list[dict]:
    from pvdm.models import autoencoder_preset, unet_preset

    ae_cfg = autoencoder_preset(s.ae_model)
    latent = steps.latent_shape(ae_cfg)
    rows = []
    for kind, cfg, preset in (
        ("autoencoder", ae_cfg, s.ae_model),
        ("unet", unet_preset(s.unet_model), s.unet_model),
    ):
        name = f"{'ae' if kind == 'autoencoder' else 'unet'}-{preset}-b1-fwd-bwd"
        step = steps.forward_backward_step(kind, cfg, 1, s.device, s.net_precision, name, latent)
        rows.append(measure(step, s))
        del step
        free_memory()
    return rows


def measure_training(s: Settings, ae_run: str, dm_run: str) -> list[dict]:
    from pvdm.models import autoencoder_preset, unet_preset
    from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS

    for name, runs in (("autoencoder", AUTOENCODER_RUNS), ("diffusion", DIFFUSION_RUNS)):
        run = ae_run if name == "autoencoder" else dm_run
        if run not in runs:
            raise ValueError(f"unknown {name} run preset {run!r} (known: {', '.join(runs)})")
    ae = AUTOENCODER_RUNS[ae_run]()
    ae.model = dataclasses.replace(
        autoencoder_preset(s.ae_model), gradient_checkpointing=ae.model.gradient_checkpointing
    )
    dm = DIFFUSION_RUNS[dm_run]()
    dm.model = dataclasses.replace(unet_preset(s.unet_model), num_classes=dm.model.num_classes)
    if s.precision:
        ae.train.precision = dm.train.precision = s.precision
    latent = steps.latent_shape(ae.model)

    def build_ae(batch: int) -> steps.Step:
        return steps.autoencoder_train_step(ae, s.device, batch, f"ae-train-{ae_run}")

    def build_dm(batch: int) -> steps.Step:
        return steps.diffusion_train_step(dm, latent, s.device, batch, f"dm-train-{dm_run}")

    rows = []
    for run, cfg, build, batch in (
        (ae_run, ae, build_ae, s.ae_batch),
        (dm_run, dm, build_dm, s.dm_batch),
    ):
        tc = cfg.train
        row = {**halving(build, batch or tc.batch_size, s), "run_preset": run}
        per_step = tc.batch_size * tc.grad_accum
        row["paper_run"] = {
            "max_steps": tc.max_steps,
            "samples_per_step": per_step,
            "projected_hours_on_this_device": tc.max_steps
            * per_step
            / row["samples_per_sec"]
            / 3600,
        }
        rows.append(row)
        free_memory()
    return rows


def pipeline(s: Settings):
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset(s.ae_model))
    return PVDMPipeline(TriplaneUNet(unet_preset(s.unet_model)), ae).to(s.device)


def sampling_record(pipe, request=None) -> dict:
    """What a run generated with: `request` (default: the pipeline's defaults), checked against
    this model."""
    request = pipe.resolve(request)
    return {
        "sampler": request.sampler,
        "steps": request.steps,
        "eta": request.record()["eta"],
        "frames": pipe.clip_frames,
        "resolution": pipe.autoencoder.config.resolution,
        "precision": "fp32",
    }


def timed_call(fn: Callable[[], Any], s: Settings) -> tuple[float, float]:
    """Seconds of one call and its peak memory."""
    reset_peak(s.device)
    steps.sync(s.device)
    start = time.perf_counter()
    fn()
    steps.sync(s.device)
    return time.perf_counter() - start, peak_memory_gb(s.device)


def measure_sample(s: Settings) -> dict:
    pipe = pipeline(s)
    pipe(num=1, steps=2, progress=False)  # warm-up: kernels, allocator
    sec, peak = timed_call(lambda: pipe(num=1, progress=False), s)
    return {**sampling_record(pipe), "num": 1, "sec": sec, "peak_memory_gb": peak}


def measure_eval(s: Settings, clips: int) -> dict:
    from pvdm.metrics.sources import reported_sampling

    pipe = pipeline(s)
    protocol = reported_sampling()
    requested, batch = s.eval_batch, s.eval_batch
    while True:
        try:
            # warm-up at this batch, then the protocol's sampling
            pipe(protocol, num=batch, batch_size=batch, steps=2, progress=False)
            sec, peak = timed_call(
                lambda b=batch: pipe(protocol, num=b, batch_size=b, progress=False), s
            )
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        free_memory()
        batch //= 2
    return {
        **sampling_record(pipe, protocol),
        "batch_requested": requested,
        "batch": batch,
        "batch_sec": sec,
        "sec_per_clip": sec / batch,
        "peak_memory_gb": peak,
        "clips": clips,
        "projected_sec": math.ceil(clips / batch) * sec,
        "projected_hours": math.ceil(clips / batch) * sec / 3600,
        "includes": "generation only (sampling + decoding); not the I3D features",
    }


# ---- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_check.json")
    parser.add_argument("--cpu-tiny", action="store_true", help="CPU, debug networks, tiny batches")
    parser.add_argument("--ae-run", default="ucf101-256", help="autoencoder run preset")
    parser.add_argument("--dm-run", default="ucf101-256", help="diffusion run preset")
    parser.add_argument("--ae-batch", type=int, help="micro-batch (default: the run preset's)")
    parser.add_argument("--dm-batch", type=int, help="batch (default: the run preset's)")
    parser.add_argument("--eval-batch", type=int, default=32, help="clips per pipeline batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--gpu-tests-rc", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gpu-tests-summary", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.cpu_tiny and not torch.cuda.is_available():
        print(
            "gpu_check: FAILED: torch sees no CUDA device (use --cpu-tiny on a CPU machine)",
            file=sys.stderr,
        )
        return 1
    parts_wanted = args.parts.split(",")
    unknown = sorted(set(parts_wanted) - set(PARTS))
    if unknown:
        parser.error(f"unknown --parts {','.join(unknown)}; choose from {','.join(PARTS)}")
    s = settings(args)
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "mode": "cpu-tiny" if args.cpu_tiny else "cuda",
        "platform": platform.platform(),
        "load_avg_before": os.getloadavg()[0],
        "gpu_tests": None
        if args.gpu_tests_rc is None
        else {"exit_code": args.gpu_tests_rc, "summary": args.gpu_tests_summary},
        "flops_counted": steps.FLOPS_COUNTED,
        "errors": {},
        "part_sec": {},
    }
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("device", lambda: device_info(s)),
        ("peak", lambda: measure_peak(s)),
        ("networks", lambda: measure_networks(s)),
        ("train", lambda: measure_training(s, args.ae_run, args.dm_run)),
        ("sample", lambda: measure_sample(s)),
        ("eval_projection", lambda: measure_eval(s, EVAL_CLIPS)),
    ]
    from pvdm.atomic import atomic_write_text

    for name, part in parts:
        if name not in parts_wanted:
            continue
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        try:
            report[name] = part()
        except Exception as e:  # record it, measure the rest, fail at the end
            traceback.print_exc()
            report[name] = None
            report["errors"][name] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        free_memory()
        report["part_sec"][name] = time.perf_counter() - start
        report["load_avg_after"] = os.getloadavg()[0]
        for row in (report.get("networks") or []) + (report.get("train") or []):
            add_utilisation(row, report.get("peak") or {})
        # written after every part, so an interrupted run keeps what it measured
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(json.dumps(report[name])[:400], flush=True)
    print(f"wrote {args.out}")
    if report["errors"]:
        name, error = next(iter(report["errors"].items()))
        more = f" (and {len(report['errors']) - 1} more)" if len(report["errors"]) > 1 else ""
        print(f"gpu_check: FAILED: {name}: {error}{more}; details in {args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # outside the measured parts (arguments, the output file)
        traceback.print_exc()
        print(f"gpu_check: FAILED: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
