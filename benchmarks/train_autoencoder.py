"""Autoencoder training speed and memory: steps/s and peak memory, phase 1 and phase 2.

Each configuration runs the real training loop (`pvdm.train.autoencoder.train_autoencoder`) on
synthetic videos in a fresh child process: 2 x `--window` steps, the rate measured over the
second window only (the first holds start-up, the step-0 evaluation and warm-up). Peak memory
is the child's RSS high-water mark on CPU, `torch.cuda.max_memory_allocated` on CUDA. Phase 2
turns the 2D/3D discriminators on from the first step. LPIPS (phase 2, and phase 1 of the paper
presets) uses a VGG16 file of random weights in torchvision's format (same cost as the real one).

    python benchmarks/train_autoencoder.py                      # writes benchmarks/results/train_autoencoder.json
    python benchmarks/train_autoencoder.py --only 'debug-*'
    python benchmarks/train_autoencoder.py --only 'official-*' --window 1 --out benchmarks/results/train_autoencoder_official.json
    python benchmarks/train_autoencoder.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LPIPS_FILE = ROOT.parent / "shared" / "weights" / "lpips" / "v0.1_vgg.pth"

CONFIGS = [
    {"name": "debug-phase1", "preset": "debug", "gan": False, "batch": 8},
    {"name": "debug-phase2", "preset": "debug", "gan": True, "batch": 8},
    {"name": "official-phase1", "preset": "ucf101-256", "gan": False, "batch": 1},
    {"name": "official-phase2", "preset": "ucf101-256", "gan": True, "batch": 1},
]


def child(config: dict, args: argparse.Namespace) -> dict:
    import torch

    from pvdm.config import apply_overrides
    from pvdm.presets import AUTOENCODER_RUNS
    from pvdm.train.autoencoder import train_autoencoder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = AUTOENCODER_RUNS[config["preset"]]()
        res, frames = cfg.model.resolution, cfg.model.frames
        overrides = [
            "data.path=synthetic", "data.layout=auto", f"data.resolution={res}", f"data.frames={frames}",
            f"data.synthetic_frames={max(2 * frames, 32)}", "data.synthetic_videos=32",
            "data.num_workers=0", f"train.batch_size={config['batch']}", "train.grad_accum=1",
            f"train.max_steps={2 * args.window}", f"train.log_every={args.window}",
            "train.eval_every=1000000", "train.checkpoint_every=1000000", "train.tensorboard=false",
            f"train.precision={args.precision}", f"train.device={args.device}", "loss.guard_clips=1",
        ]  # fmt: skip
        if config["gan"] or cfg.loss.perceptual_weight > 0:
            # LPIPS with a VGG16 file of random weights in torchvision's format (same cost)
            from test_lpips_model import random_vgg16_state

            vgg = tmp / "vgg16-397923af.pth"
            torch.save(random_vgg16_state(), vgg)
            overrides += [
                "loss.perceptual_weight=4.0", f"loss.vgg_weights={vgg}",
                f"loss.lpips_weights={LPIPS_FILE}",
            ]  # fmt: skip
        overrides += ["loss.disc_start=0" if config["gan"] else "loss.disc_start=100000000"]
        cfg = apply_overrides(cfg, overrides)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        run = train_autoencoder(cfg, tmp / "run")
        rows = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
        timed = [r for r in rows if "steps_per_sec" in r]
        rate = timed[-1]["steps_per_sec"]
        if args.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**30
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        **config,
        "resolution": res,
        "frames": frames,
        "precision": args.precision,
        "steps_per_sec": rate,
        "sec_per_step": 1.0 / rate,
        "samples_per_sec": rate * config["batch"],
        "peak_memory_gb": peak,
        "timed_steps": args.window,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/train_autoencoder.json"
    )
    parser.add_argument("--only", default="*", help="glob over configuration names")
    parser.add_argument("--window", type=int, default=5, help="timed steps (after as many warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT / "tests"))
        print("RESULT " + json.dumps(child(json.loads(args.child), args)), flush=True)
        return
    results = []
    for config in CONFIGS:
        if not fnmatch.fnmatch(config["name"], args.only):
            continue
        cmd = [
            sys.executable, __file__, "--child", json.dumps(config), "--window", str(args.window),
            "--device", args.device, "--precision", args.precision,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        load = os.getloadavg()[0]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            result = {**config, "error": proc.stderr.strip().splitlines()[-1:]}
        else:
            result = json.loads(lines[-1][7:])
        result["load_average_before"] = load
        print(json.dumps(result), flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "train_autoencoder",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": args.device},
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
