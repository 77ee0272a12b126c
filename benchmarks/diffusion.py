"""Diffusion speed and memory: training with cached latents vs encoding every batch, and sampling.

Training (the real loop, `pvdm.train.diffusion.train_diffusion`, in a fresh child process per
configuration; the rate is measured over the second `--window` of steps):
- `train-cached`: latents read from a latent cache (filled with random latents of the right
  geometry; their values do not change the cost);
- `train-encoded`: 32-frame clips encoded by the autoencoder at every step (the official way).

Sampling (fresh child): the time of one UNet call and of one autoencoder decode/encode at batch 1,
one clip with DPM-Solver++ 20 steps measured end to end, and the totals for one clip and
one 128-frame video (8 clips, each next one conditioned on the re-encoded previous clip) with
DDIM-400 (the paper's setting) and DPM-20, computed as calls x measured call time + decodes +
encodes. `--full` measures DDIM-400 end to end too (slow on a CPU).

    python benchmarks/diffusion.py                       # writes benchmarks/results/diffusion.json
    python benchmarks/diffusion.py --preset debug        # quick
    python benchmarks/diffusion.py --device cuda --full
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"official": ("official", "official"), "debug": ("debug", "debug")}


def _peak_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _models(preset: str, device: str):
    import torch

    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    ae_name, unet_name = PRESETS[preset]
    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset(ae_name)).to(device).eval()
    unet = TriplaneUNet(unet_preset(unet_name)).to(device)
    for p in unet.parameters():  # the zero-initialised layers would make the output trivially 0
        if p.dim() > 1 and p.abs().max() == 0:
            torch.nn.init.normal_(p, std=0.02)
    return ae, unet.eval()


def _random_cache(path: Path, ae, entries: int = 16) -> None:
    import torch
    from safetensors.torch import save_file

    shape = ae.latent_shape()
    path.mkdir(parents=True)
    tensors = {
        k: torch.rand(entries, shape.channels, shape.num_tokens).mul(2).sub(1).half()
        for k in ("prev", "target", "uncond")
    }
    tensors["label"] = torch.zeros(entries, dtype=torch.int64)
    tensors["video"] = torch.arange(entries)
    save_file(tensors, str(path / "shard-00000.safetensors"))
    manifest = {
        "format": "pvdm-latent-cache",
        "format_version": 1,
        "geometry": {
            "channels": shape.channels,
            "frames": shape.frames,
            "height": shape.height,
            "width": shape.width,
        },
        "num_entries": entries,
        "classes": None,
        "shards": [{"file": "shard-00000.safetensors", "entries": entries}],
    }
    (path / "manifest.json").write_text(json.dumps(manifest))


def child_train(config: dict, args: argparse.Namespace) -> dict:
    import torch

    from pvdm.config import apply_overrides
    from pvdm.presets import DIFFUSION_RUNS
    from pvdm.train.diffusion import train_diffusion

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ae, _ = _models(args.preset, "cpu")
        ae.save_pretrained(tmp / "ae")
        res, frames = ae.config.resolution, ae.config.frames
        if config["source"] == "cached":
            _random_cache(tmp / "cache", ae)
            data = [f"data.path={tmp / 'cache'}"]
        else:
            data = [
                "data.path=synthetic",
                f"data.synthetic_frames={2 * frames}",
                "data.synthetic_videos=32",
            ]
        from pvdm.models import unet_preset

        cfg = DIFFUSION_RUNS["debug"]()
        cfg.model = unet_preset(PRESETS[args.preset][1])
        cfg = apply_overrides(
            cfg,
            [
                *data, f"data.resolution={res}", f"data.frames={frames}", "data.num_workers=0",
                f"autoencoder={tmp / 'ae'}", f"train.batch_size={args.batch}",
                f"train.max_steps={2 * args.window}", f"train.log_every={args.window}",
                "train.checkpoint_every=1000000", "train.tensorboard=false",
                f"train.device={args.device}", "train.preview_every=0",
                "diffusion.cond_prob=0.3",
            ],
        )  # fmt: skip
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        run = train_diffusion(cfg, tmp / "run")
        rate = last_steps_per_sec(run / "stats.jsonl")
    return {
        **config,
        "batch": args.batch,
        "steps_per_sec": rate,
        "samples_per_sec": rate * args.batch,
        "peak_memory_gb": _peak_gb(args.device),
        "timed_steps": args.window,
    }


def last_steps_per_sec(stats_file: Path) -> float:
    """The newest training rate in a run's stats.jsonl (pvdm.jsonl reads past a torn line)."""
    from pvdm.jsonl import read_lines

    rates = [r["steps_per_sec"] for r in read_lines(stats_file) if "steps_per_sec" in r]
    if not rates:
        raise RuntimeError(f"{stats_file} holds no steps_per_sec record")
    return rates[-1]


def child_sample(config: dict, args: argparse.Namespace) -> dict:
    import torch

    from pvdm.diffusion.pipeline import PVDMPipeline

    ae, unet = _models(args.preset, args.device)
    pipe = PVDMPipeline(unet, ae)
    shape = ae.latent_shape()
    z = pipe._noise([0], 0)
    t = torch.tensor([500], device=args.device)

    def timed(fn, repeats: int) -> float:
        times = []
        for _ in range(repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with torch.no_grad():
        timed(lambda: unet(z, t, cond=z), 1)  # warm-up
        call = timed(lambda: unet(z, t, cond=z), args.repeats)
        decoded = pipe.decode(z)
        decode = timed(lambda: pipe.decode(z), args.repeats)
        encode = timed(lambda: pipe.encode(decoded), args.repeats)
        dpm_clip = timed(lambda: pipe(sampler="dpm", steps=20, progress=False), 1)
        ddim_clip = (
            timed(lambda: pipe(sampler="ddim", steps=400, progress=False), 1) if args.full else None
        )
    clips = 128 // shape.frames
    estimate = {
        f"{name}_{steps}": {
            "clip_sec": steps * call + decode,
            "video_128f_sec": clips * (steps * call + decode) + (clips - 1) * encode,
        }
        for name, steps in (("ddim", 400), ("dpm", 20))
    }
    return {
        **config,
        "unet_call_sec": call,
        "decode_sec": decode,
        "encode_sec": encode,
        "clip_frames": shape.frames,
        "measured": {"dpm_20_clip_sec": dpm_clip, "ddim_400_clip_sec": ddim_clip},
        "estimated_from_calls": estimate,
        "peak_memory_gb": _peak_gb(args.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/diffusion.json")
    parser.add_argument("--preset", choices=list(PRESETS), default="official")
    parser.add_argument("--only", default="*", help="glob over configuration names")
    parser.add_argument("--batch", type=int, default=2, help="training batch")
    parser.add_argument("--window", type=int, default=3, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of a call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="also run DDIM-400 end to end")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config = json.loads(args.child)
        fn = child_train if config["name"].startswith("train") else child_sample
        print("RESULT " + json.dumps(fn(config, args)), flush=True)
        return
    configs = [
        {"name": "train-cached", "source": "cached"},
        {"name": "train-encoded", "source": "encoded"},
        {"name": "sample"},
    ]
    results = []
    for config in configs:
        if not fnmatch.fnmatch(config["name"], args.only):
            continue
        cmd = [sys.executable, __file__, "--child", json.dumps(config)]
        for flag in ("preset", "batch", "window", "repeats", "device"):
            cmd += [f"--{flag}", str(getattr(args, flag))]
        cmd += ["--full"] if args.full else []
        load = os.getloadavg()[0]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
        )
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        result = (
            json.loads(lines[-1][7:])
            if lines
            else {**config, "error": proc.stderr.strip().splitlines()[-3:]}
        )
        result["load_average_before"] = load
        print(json.dumps(result), flush=True)
        results.append(result)
    by_name = {r["name"]: r for r in results}
    summary = {}
    if "samples_per_sec" in by_name.get("train-cached", {}) and "samples_per_sec" in by_name.get(
        "train-encoded", {}
    ):
        summary["cached_over_encoded"] = (
            by_name["train-cached"]["samples_per_sec"] / by_name["train-encoded"]["samples_per_sec"]
        )
    report = {
        "benchmark": "diffusion",
        "preset": args.preset,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": args.device},
        "summary": summary,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
