"""Speed and memory of the triplane autoencoder and UNet: SDPA against plain matmul-softmax.

Every configuration runs in a fresh child process, so peak-memory numbers do not bleed into each
other: on CPU the peak is the process's RSS high-water mark (`ru_maxrss`), on CUDA
`torch.cuda.max_memory_allocated`. A configuration first times the forward pass (inference,
`torch.no_grad`), then forward + backward (a training step without the optimizer); the peak
after each phase is reported. A CPU child whose RSS passes `--memory-limit-gb` is stopped and
reported as out of memory (so an over-large configuration cannot take the machine down).

    python benchmarks/models.py                         # everything, writes benchmarks/results/models.json
    python benchmarks/models.py --only 'ae-*' --repeats 1 --warmup 0
    python benchmarks/models.py --device cuda
    python benchmarks/models.py --ae-preset debug --unet-preset debug   # a quick smoke run
    python benchmarks/models.py --only 'unet-*' --merge   # re-run some, keep the rest of the file
    python benchmarks/models.py --skip 'ae-b1-bf16-*'       # bf16 matmuls are slow on CPUs without bf16
    python benchmarks/models.py --list

The JSON holds `runs` (one header per invocation: date, command, device, threads, presets),
`results` (one entry per configuration, with the 1-minute load average before and after it,
since other processes on a shared machine slow it down) and `summary` (SDPA speed-ups).
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def configurations() -> list[dict]:
    """The benchmark matrix, SDPA and math runs of one setting back to back (similar load)."""
    settings = [
        # model, batch, dtype, activation checkpointing, attention backends
        ("autoencoder", 1, "fp32", False, ("sdpa", "math")),
        ("autoencoder", 1, "fp32", True, ("sdpa", "math")),  # the CPU memory target
        ("unet", 1, "fp32", False, ("sdpa", "math")),
        ("unet", 8, "fp32", False, ("sdpa", "math")),
        ("autoencoder", 1, "bf16", False, ("sdpa", "math")),
        ("autoencoder", 1, "bf16", True, ("sdpa",)),  # the GPU memory target
        ("unet", 1, "bf16", False, ("sdpa", "math")),
        ("unet", 8, "bf16", False, ("sdpa", "math")),
    ]
    configs = []
    for model, batch, dtype, ckpt, backends in settings:
        short = "ae" if model == "autoencoder" else "unet"
        for attention in backends:
            name = f"{short}-b{batch}-{dtype}-{attention}" + ("-ckpt" if ckpt else "")
            configs.append(
                dict(
                    name=name, model=model, batch=batch, dtype=dtype, attention=attention, ckpt=ckpt
                )
            )
    return configs


# ---- child: one configuration --------------------------------------------------------------


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _watch_memory(limit_gb: float) -> None:
    """Stop the process (exit code 3) as soon as its RSS passes the limit (Linux only)."""
    if not Path("/proc/self/statm").exists():
        return

    def watch() -> None:
        while True:
            if _rss_gb() > limit_gb:
                print(f"memory limit of {limit_gb} GB exceeded", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def run_child(spec: dict) -> dict:
    """Build the model, time forward and forward+backward, return numbers."""
    import resource

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from pvdm.models import (
        TriplaneAutoencoder,
        TriplaneUNet,
        autoencoder_preset,
        randn_latent,
        unet_preset,
    )

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    if not cuda:
        _watch_memory(spec["memory_limit_gb"])
    torch.manual_seed(0)
    overrides = dict(attention=spec["attention"], gradient_checkpointing=spec["ckpt"])
    if spec["model"] == "autoencoder":
        cfg = autoencoder_preset(spec["ae_preset"])
        for k, v in overrides.items():
            setattr(cfg, k, v)
        model = TriplaneAutoencoder(cfg).to(device)
        shape = (spec["batch"], 3, cfg.frames, cfg.resolution, cfg.resolution)
        video = torch.rand(shape, device=device) * 2 - 1

        def step():
            return model(video).float().square().mean()
    else:
        cfg = unet_preset(spec["unet_preset"])
        for k, v in overrides.items():
            setattr(cfg, k, v)
        model = TriplaneUNet(cfg).to(device)
        x = randn_latent(spec["batch"], spec["latent_shape"], device=device)
        t = torch.randint(0, 1000, (spec["batch"],), device=device)

        def step():
            return model(x, t, cond=x).pack().float().square().mean()

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def peak_gb() -> float:
        if cuda:
            return torch.cuda.max_memory_allocated(device) / 1e9
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux

    def timed(fn) -> float:
        for _ in range(spec["warmup"]):
            fn()
        sync()
        start = time.perf_counter()
        for _ in range(spec["repeats"]):
            fn()
        sync()
        return (time.perf_counter() - start) / spec["repeats"]

    def forward() -> None:
        with torch.no_grad(), autocast:
            step()

    def train() -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = step()
        loss.backward()

    result = {"parameters": sum(p.numel() for p in model.parameters())}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    result["forward_sec"] = timed(forward)
    result["forward_peak_gb"] = peak_gb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    result["train_step_sec"] = timed(train)
    result["train_peak_gb"] = peak_gb()
    return result


# ---- parent --------------------------------------------------------------------------------


def run_config(spec: dict, timeout: float) -> dict:
    """Run one configuration in a fresh Python process and parse its result line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    if proc.returncode == 3:
        return {"error": f"out of memory: RSS passed the {spec['memory_limit_gb']} GB limit"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit code {proc.returncode}: {tail[0][:300]}"}
    return {**json.loads(lines[-1][len("RESULT ") :]), "wall_sec": wall}


def summarise(results: list[dict]) -> dict:
    """SDPA-vs-math speed-ups and the memory targets, where both numbers exist."""
    by_name = {r["name"]: r for r in results}
    speedups = {}
    for r in results:
        if r["attention"] != "sdpa" or "train_step_sec" not in r:
            continue
        other = by_name.get(r["name"].replace("-sdpa", "-math"))
        if other and "train_step_sec" in other:
            speedups[r["name"]] = {
                "forward": round(other["forward_sec"] / r["forward_sec"], 3),
                "forward_backward": round(other["train_step_sec"] / r["train_step_sec"], 3),
            }
    return {"sdpa_speedup_over_math": speedups}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "models.json")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--only", action="append", help="glob on configuration names (repeatable)")
    parser.add_argument("--skip", action="append", help="glob of configurations to leave out")
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations per phase")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per phase")
    parser.add_argument("--ae-preset", default="official")
    parser.add_argument("--unet-preset", default="official")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0, help="CPU RSS limit per run")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's)")
    parser.add_argument(
        "--merge", action="store_true", help="keep results in --out of configurations not run now"
    )
    parser.add_argument("--list", action="store_true", help="list configuration names and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(args.child)
        if spec.get("latent_shape"):
            sys.path.insert(0, str(ROOT / "src"))
            from pvdm.models import LatentShape

            spec["latent_shape"] = LatentShape(*spec["latent_shape"])
        print("RESULT " + json.dumps(run_child(spec)), flush=True)
        return 0

    configs = configurations()
    if args.only:
        configs = [c for c in configs if any(fnmatch.fnmatch(c["name"], p) for p in args.only)]
    if args.skip:
        configs = [c for c in configs if not any(fnmatch.fnmatch(c["name"], p) for p in args.skip)]
    if args.list:
        print("\n".join(c["name"] for c in configs))
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from pvdm.models import TriplaneAutoencoder, autoencoder_preset

    with torch.device("meta"):
        latent_shape = list(TriplaneAutoencoder(autoencoder_preset(args.ae_preset)).latent_shape())
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "ae_preset": args.ae_preset,
        "unet_preset": args.unet_preset,
        "latent_shape": latent_shape,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "memory": "CPU: process RSS high-water mark (ru_maxrss) in a fresh process per "
        "configuration, model and inputs included; CUDA: torch.cuda.max_memory_allocated",
    }  # fmt: skip
    runs, results = [meta], []
    if args.merge and args.out.is_file():  # keep earlier results of configurations not re-run
        earlier = json.loads(args.out.read_text())
        runs = [*earlier.get("runs", [earlier.get("meta")]), meta]
        names = {c["name"] for c in configs}
        results = [r for r in earlier["results"] if r["name"] not in names]
    from pvdm.atomic import atomic_write_text

    for config in configs:
        spec = {
            **config,
            "device": args.device,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "ae_preset": args.ae_preset,
            "unet_preset": args.unet_preset,
            "latent_shape": latent_shape,
            "memory_limit_gb": args.memory_limit_gb,
            "threads": args.threads,
        }
        print(f"{config['name']} ...", end=" ", flush=True)
        load_before = os.getloadavg()[0]
        outcome = run_config(spec, args.timeout)
        # the 1-minute load average shows when other processes competed for the CPU
        load = {"load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]}
        results.append({**config, **outcome, **load, "run": len(runs) - 1})
        print(outcome.get("error") or "  ".join(
            f"{k} {outcome[k]:.3f}" for k in ("forward_sec", "forward_peak_gb", "train_step_sec", "train_peak_gb")
        ), flush=True)  # fmt: skip
        # written after every configuration, so an interrupted run keeps what it measured
        report = {"runs": runs, "results": results, "summary": summarise(results)}
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
