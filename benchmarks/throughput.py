"""Utilisation of the demo's steps against this machine's own peak FLOP/s, measured in the same run.

Rows (steps built by benchmarks/steps.py, the training loops' own minus data loading):
- `ae-train-demo`: one autoencoder optimizer step of the `debug` run preset at its batch (8):
  forward, L1 + pre-tanh hinge (`AutoencoderLoss`, `PreTanhProbe`), backward, clip, AdamW;
- `dm-train-demo`: one diffusion optimizer step of the `debug` run preset at its batch (16) on
  latents of the debug autoencoder's shape: q_sample, UNet, Min-SNR `diffusion_loss`,
  backward, clip, AdamW;
- `sample-demo`: one UNet forward without gradients at the demo's sampling batch (8);
- with `--official`: `ae-official-b1` and `unet-official-b1`, forward + backward of the
  `official` networks at batch 1 (fp32; slow on a CPU, and the autoencoder needs ~17 GB).

Each row: FLOPs of one step (FlopCounterMode, see `flops_counted` in the JSON), the median
wall time of `--repeats` steps after `--warmup`, achieved FLOP/s, and utilisation in percent
against the peak FLOP/s of one large fp32 matmul (`peak-matmul-*`) and one large fp32 3 x 3
conv2d (`peak-conv2d-*`) at the same thread count. Both peaks are measured before the model rows
and again after them; the peak is the faster of the two measurements. `util_best_pct` divides by
the better of the two peaks (matmul or conv), the machine's own limit for fp32 work; the model
steps mix matmuls (attention, MLPs) and convolutions (UNet), so `util_matmul_pct` and
`util_conv_pct` are given too. The 1-minute load average before and after each row shows when
other processes shared the CPU.

`--compare-workers [N]` also measures the demo's two training steps' samples/s with 1 process of
N threads against N processes of 1 thread each running the step concurrently (independent, no
gradient all-reduce), each in a fresh child process, over the same `--window` seconds: once with
the whole batch in every process (what a batch N times larger would give), once with the batch
split over them (what `--workers N` trains, less its gradient exchange).

`--compare-demo MINUTES` runs `pvdm demo --minutes MINUTES` twice, side by side in one run
(`--workers 1`, then `--workers N`), and compares the training samples per demo minute (the
autoencoder's and the diffusion model's steps times their batches, over the whole demo's wall
time, generation and FVD included), with each demo's FVD ladder when one was measured.

    python benchmarks/throughput.py                   # writes benchmarks/results/throughput.json
    python benchmarks/throughput.py --only 'none' --compare-demo 10   # two 10-minute demos
    python benchmarks/throughput.py --threads 1 --compare-workers 2
    python benchmarks/throughput.py --official --repeats 3 --warmup 1
    python benchmarks/throughput.py --tiny --repeats 1 --warmup 0 --out /tmp/t.json   # seconds
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import steps  # noqa: E402

# (matmul n, conv batch, conv channels, conv side): full size, and --tiny
PEAK_SIZES = {"full": (2048, 16, 128, 64), "tiny": (512, 2, 64, 32)}
TINY_BATCHES = {"ae-train-demo": 2, "dm-train-demo": 4, "sample-demo": 2}


def demo_sampling_batch() -> int:
    """Clips per UNet call when the demo samples: its clip count, at most the pipeline's batch."""
    from pvdm.demo.results import NUM_CLIPS
    from pvdm.diffusion import SamplingConfig

    return min(NUM_CLIPS, SamplingConfig().batch_size)


def build_steps(args: argparse.Namespace, device) -> Iterator[steps.Step]:
    """The model rows, in order (built lazily by name so --only skips the building too)."""
    from pvdm.models import autoencoder_preset, unet_preset
    from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS

    ae_run, dm_run = AUTOENCODER_RUNS["debug"](), DIFFUSION_RUNS["debug"]()
    latent = steps.latent_shape(ae_run.model)

    def batch(name: str, default: int) -> int:
        return TINY_BATCHES[name] if args.tiny else default

    builders = {
        "ae-train-demo": lambda n: steps.autoencoder_train_step(
            ae_run, device, batch(n, ae_run.train.batch_size), n
        ),
        "dm-train-demo": lambda n: steps.diffusion_train_step(
            dm_run, latent, device, batch(n, dm_run.train.batch_size), n
        ),
        "sample-demo": lambda n: steps.unet_forward_step(
            dm_run.model, latent, batch(n, demo_sampling_batch()), device, n
        ),
    }
    if args.official:
        ae_cfg = autoencoder_preset("official")
        builders["ae-official-b1"] = lambda n: steps.forward_backward_step(
            "autoencoder", ae_cfg, 1, device, "fp32", n
        )
        builders["unet-official-b1"] = lambda n: steps.forward_backward_step(
            "unet", unet_preset("official"), 1, device, "fp32", n, steps.latent_shape(ae_cfg)
        )
    if args.compile:  # the same training steps with the network through torch.compile
        builders["ae-train-demo-compiled"] = lambda n: steps.autoencoder_train_step(
            ae_run, device, batch("ae-train-demo", ae_run.train.batch_size), n, compile=True
        )
        builders["dm-train-demo-compiled"] = lambda n: steps.diffusion_train_step(
            dm_run, latent, device, batch("dm-train-demo", dm_run.train.batch_size), n, True
        )
    names = [n for n in builders if not args.only or any(fnmatch.fnmatch(n, p) for p in args.only)]
    for name in names:
        yield builders[name](name)


EAGER_FLOPS: dict[str, int] = {}  # FLOPs of each eager row, for its compiled twin


def measure(step: steps.Step, repeats: int, warmup: int, device) -> dict:
    """FLOPs, median seconds and FLOP/s of one step, with the load average around it."""
    load_before = os.getloadavg()[0]
    first_sec = None
    if step.info.get("compiled"):
        # FLOPs are the eager step's; the first call compiles (timed: the cost a run pays once)
        flops = EAGER_FLOPS.get(step.name.removesuffix("-compiled"))
        if flops is None:
            raise SystemExit(f"{step.name}: run its eager row too (its FLOPs are counted there)")
        start = time.perf_counter()
        step.fn()
        steps.sync(device)
        first_sec = time.perf_counter() - start
    else:
        flops = steps.count_flops(step.fn)  # one untimed call
        EAGER_FLOPS[step.name] = flops
    times = steps.time_step(step.fn, repeats, warmup, device)
    sec = steps.median(times)
    return {
        "name": step.name,
        **step.info,
        **({"first_call_sec": first_sec} if first_sec is not None else {}),
        "samples_per_step": step.samples,
        "flops": flops,
        "sec_median": sec,
        "sec_all": times,
        "flops_per_sec": flops / sec,
        "samples_per_sec": step.samples / sec,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg()[0],
    }


def add_utilisation(results: list[dict], peak: dict) -> None:
    for r in results:
        r["util_matmul_pct"] = 100 * r["flops_per_sec"] / peak["matmul_flops_per_sec"]
        r["util_conv_pct"] = 100 * r["flops_per_sec"] / peak["conv2d_flops_per_sec"]
        r["util_best_pct"] = 100 * r["flops_per_sec"] / peak["best_flops_per_sec"]


# ---- --compare-workers: 1 process x N threads against N processes x 1 thread ------------------


def worker(spec: dict) -> None:
    """Child: build the demo's training step (`spec["step"]`: ae-train-demo or dm-train-demo),
    warm up, print READY, wait for a line, time a window."""
    import torch

    torch.set_num_threads(spec["threads"])
    from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS

    ae_run, cpu = AUTOENCODER_RUNS["debug"](), torch.device("cpu")
    if spec["step"] == "ae-train-demo":
        step = steps.autoencoder_train_step(ae_run, cpu, spec["batch"])
    else:
        latent = steps.latent_shape(ae_run.model)
        step = steps.diffusion_train_step(DIFFUSION_RUNS["debug"](), latent, cpu, spec["batch"])
    for _ in range(spec["warmup"]):
        step.fn()
    print("READY", flush=True)
    sys.stdin.readline()
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < spec["window"]:
        step.fn()
        count += 1
    sec = time.perf_counter() - start
    print(
        "RESULT " + json.dumps({"steps": count, "sec": sec, "threads": spec["threads"]}), flush=True
    )


def run_workers(
    processes: int, threads: int, args: argparse.Namespace, batch: int, step: str
) -> dict:
    """`processes` concurrent children of `threads` threads; their summed training rate."""
    spec = {
        "step": step,
        "threads": threads,
        "batch": batch,
        "warmup": max(args.warmup, 1),
        "window": args.window,
    }
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    load_before = os.getloadavg()[0]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    try:
        for p in procs:  # every child built and warmed up, then all start together
            line = p.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"a --compare-workers child failed before its window: {line!r}")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=args.window + 600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for p, out in zip(procs, outs):
        lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not lines:
            raise RuntimeError(f"a --compare-workers child exited with code {p.returncode}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    steps_per_sec = sum(r["steps"] / r["sec"] for r in results)
    return {
        "processes": processes,
        "threads_per_process": threads,
        "batch": batch,
        "per_process": results,
        "steps_per_sec": steps_per_sec,
        "samples_per_sec": steps_per_sec * batch,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg()[0],
    }


def compare_workers(n: int, args: argparse.Namespace, step: str = "dm-train-demo") -> dict:
    from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS

    runs = {"ae-train-demo": AUTOENCODER_RUNS, "dm-train-demo": DIFFUSION_RUNS}
    batch = TINY_BATCHES[step] if args.tiny else runs[step]["debug"]().train.batch_size
    one = run_workers(1, n, args, batch, step)
    many = run_workers(n, 1, args, batch, step)
    # what `--workers N` computes: the same global batch split over the processes (without the
    # gradient exchange, so an upper bound of its rate)
    split = run_workers(n, 1, args, max(1, batch // n), step)
    return {
        "step": step,
        "window_sec": args.window,
        "one_process": one,
        "processes": many,
        "processes_split_batch": split,
        "processes_over_one_process": many["samples_per_sec"] / one["samples_per_sec"],
        "split_over_one_process": split["samples_per_sec"] / one["samples_per_sec"],
    }


# ---- main -----------------------------------------------------------------------------------


def demo_run(out: Path, minutes: float, workers: int) -> dict:
    """One `pvdm demo` and what its demo.json says: steps, samples, seconds, FVD ladder."""
    import shutil

    from pvdm.presets import AUTOENCODER_RUNS, DIFFUSION_RUNS

    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pvdm", "demo", "--out", str(out), "--minutes", str(minutes)]
    cmd += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    state = json.loads((out / "demo.json").read_text())
    ae_batch = AUTOENCODER_RUNS["debug"]().train.batch_size
    dm_batch = DIFFUSION_RUNS["debug"]().train.batch_size
    samples = state["ae_steps"] * ae_batch + state["dm_steps"] * dm_batch
    fvd = state["metrics"].get("fvd", {})
    return {
        "workers": workers,
        "wall_sec": wall,
        "stage_sec": state["seconds"],
        "ae_steps": state["ae_steps"],
        "dm_steps": state["dm_steps"],
        "training_samples": samples,
        "training_samples_per_min": samples / (wall / 60),
        "fvd_rungs": {k: v["fvd"] for k, v in fvd.get("rungs", {}).items()},
        "load_avg_1min": [load, os.getloadavg()[0]],
    }


def compare_demo(minutes: float, workers: int, keep: Path | None = None) -> dict:
    """Two demos of `minutes`, one process and `workers` processes for the training stages
    (in `keep`/one and `keep`/workers when given, e.g. to measure their models further)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pvdm-demo-bench-") as tmp:
        folder = keep or Path(tmp)
        one = demo_run(folder / "one", minutes, 1)
        print(f"  --workers 1: {json.dumps(one)}", flush=True)
        many = demo_run(folder / "workers", minutes, workers)
        print(f"  --workers {workers}: {json.dumps(many)}", flush=True)
    ratio = many["training_samples_per_min"] / one["training_samples_per_min"]
    return {"minutes": minutes, "one_process": one, "workers": many, "ratio": ratio}


def print_row(r: dict) -> None:
    """One line of the table (utilisation columns once the peaks are known)."""
    util = ""
    if "util_best_pct" in r:
        util = f" {r['util_best_pct']:6.1f} {r['util_matmul_pct']:6.1f} {r['util_conv_pct']:6.1f}"
    print(
        f"{r['name']:<30} {r['flops'] / 1e9:9.2f} {r['sec_median'] * 1e3:9.1f} "
        f"{r['flops_per_sec'] / 1e9:8.1f}{util}  {r['load_avg_before']:.2f}/{r['load_avg_after']:.2f}",
        flush=True,
    )


TABLE_HEAD = f"{'row':<30} {'GFLOP':>9} {'ms':>9} {'GFLOP/s':>8}"
UTIL_HEAD = f" {'best%':>6} {'mm%':>6} {'conv%':>6}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/throughput.json")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per row")
    parser.add_argument("--peak-repeats", type=int, default=5, help="timed calls per peak row")
    parser.add_argument("--only", action="append", help="glob over model row names (repeatable)")
    parser.add_argument("--official", action="store_true", help="add the official-size networks")
    parser.add_argument("--tiny", action="store_true", help="small batches and peak sizes (tests)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add the two training steps with the network through torch.compile (first call "
        "timed as first_call_sec)",
    )
    parser.add_argument(
        "--compare-workers",
        type=int,
        nargs="?",
        const=2,
        metavar="N",
        help="also compare 1 process x N threads with N processes x 1 thread (default N: 2)",
    )
    parser.add_argument("--window", type=float, default=10.0, help="seconds per worker timing")
    parser.add_argument(
        "--compare-demo",
        type=float,
        metavar="MINUTES",
        help="also run `pvdm demo --minutes MINUTES` with --workers 1 and --workers N (N: "
        "--compare-workers, default 2) and compare training samples per demo minute",
    )
    parser.add_argument("--demo-dir", type=Path, help="keep the --compare-demo runs here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    n, conv_batch, conv_channels, conv_side = PEAK_SIZES["tiny" if args.tiny else "full"]

    def peak_rows(when: str) -> list[dict]:
        rows = []
        for step in (
            steps.matmul_step(n, torch.float32, device),
            steps.conv_step(conv_batch, conv_channels, conv_side, torch.float32, device),
        ):
            row = measure(step, args.peak_repeats, 1, device)
            row.update(name=f"{step.name}-{when}", kind="peak")
            del row["samples_per_step"], row["samples_per_sec"]
            rows.append(row)
            print_row(row)
        return rows

    print(TABLE_HEAD + "  load before/after", flush=True)
    results = peak_rows("start")
    for step in build_steps(args, device):
        row = {**measure(step, args.repeats, args.warmup, device), "kind": "step"}
        results.append(row)
        print_row(row)
    results += peak_rows("end")
    peaks = [r for r in results if r["kind"] == "peak"]
    peak = {
        "matmul_flops_per_sec": max(r["flops_per_sec"] for r in peaks if "matmul" in r["name"]),
        "conv2d_flops_per_sec": max(r["flops_per_sec"] for r in peaks if "conv2d" in r["name"]),
    }
    peak["best_flops_per_sec"] = max(peak.values())
    add_utilisation(results, peak)
    print(f"\nutilisation against the peak ({peak['best_flops_per_sec'] / 1e9:.1f} GFLOP/s fp32)")
    print(TABLE_HEAD + UTIL_HEAD + "  load before/after")
    for row in results:
        print_row(row)

    report = {
        "benchmark": "throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "torch": torch.__version__,
        "cpu_model": steps.cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "tiny": args.tiny,
        "flops_counted": steps.FLOPS_COUNTED,
        "utilisation": "100 * achieved FLOP/s / peak FLOP/s; util_matmul_pct against the fp32 "
        "matmul peak, util_conv_pct against the fp32 3x3 conv2d peak, util_best_pct against the "
        "better of the two; each peak is the faster of its start and end measurements",
        "peak": peak,
        "results": results,
    }
    if args.compare_workers:
        print(f"compare workers: 1 x {args.compare_workers} threads vs {args.compare_workers} x 1")
        report["compare_workers"] = []
        for step in ("ae-train-demo", "dm-train-demo"):
            cmp = compare_workers(args.compare_workers, args, step)
            report["compare_workers"].append(cmp)
            print(
                f"  {step}: {cmp['one_process']['samples_per_sec']:.2f} vs "
                f"{cmp['processes']['samples_per_sec']:.2f} samples/s with the whole batch in "
                f"each process (ratio {cmp['processes_over_one_process']:.2f}), "
                f"{cmp['processes_split_batch']['samples_per_sec']:.2f} with it split "
                f"(ratio {cmp['split_over_one_process']:.2f})",
                flush=True,
            )
    if args.compare_demo:
        report["compare_demo"] = cmp = compare_demo(
            args.compare_demo, args.compare_workers or 2, args.demo_dir
        )
        print(
            f"demo: {cmp['one_process']['training_samples_per_min']:.0f} vs "
            f"{cmp['workers']['training_samples_per_min']:.0f} training samples per demo minute: "
            f"ratio {cmp['ratio']:.2f}",
            flush=True,
        )
    from pvdm.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
