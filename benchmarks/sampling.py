"""The sampler frontier of a trained model: FVD against network evaluations (NFE) per clip.

Every point generates `--num` 16-frame videos with one sampler at one step count, from the same
seeds, and measures their FVD against one reference set (real 16-frame train clips, the quality
ladder's detector and reference: `pvdm.metrics.ladder.reference_features`). NFE counts every
network evaluation of one clip, guidance included (the pipeline's callback reports them);
seconds per clip are the wall-clock of generating (not of scoring) divided by the clips made.
The seed-to-seed spread is measured at the reference point (default DDIM-100, eta 1) on
`--spread` disjoint seed sets: a sampler is "at the top" when its FVD lies within that spread
(`--point-seeds K` measures every grid point on K seed sets too; the JSON keeps every seed set
measured for a grid point, and the chart shows their mean).

    python benchmarks/sampling.py --model runs/demo/diffusion --data synthetic --num 128 \
        --reference-cache benchmarks/results/reference-synthetic-128.pt \
        --out benchmarks/results/sampling_demo.json

writes the JSON and a chart (`<out>.png`). `--grid` lists `sampler:steps,steps,...:eta` groups
separated by `;` (ddpm takes every step: `ddpm::1`). Every measured point is also appended to
`<out>.points.jsonl` as it finishes; a later run with the same `--out` reuses the points found
there that were measured the same way (model, data, detector and reference set), so a stopped
measurement resumes and a grid can grow.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
NFES = "1,2,4,8,10,20,50,100"
DEFAULT_GRID = f"ddim:{NFES}:1;dpm-sde:{NFES}:1;dpm:{NFES}:0;ddpm::1"
REFERENCE = "ddim:100:1"
SEED_SETS = (10_000, 20_000, 30_000, 40_000, 50_000)


def parse_grid(text: str) -> list[tuple[str, int | None, float]]:
    """`ddim:4,8:1;ddpm::1` -> [("ddim", 4, 1.0), ("ddim", 8, 1.0), ("ddpm", None, 1.0)]."""
    out: list[tuple[str, int | None, float]] = []
    for group in filter(None, text.split(";")):
        parts = group.split(":")
        if len(parts) != 3:
            raise SystemExit(f"--grid: {group!r} is not sampler:steps,...:eta")
        name, steps, eta = parts
        try:
            counts = [int(s) for s in steps.split(",") if s] or [None]
            value = float(eta)
        except ValueError:
            raise SystemExit(
                f"--grid: {group!r} has a step count or eta that is not a number"
            ) from None
        out += [(name, n, value) for n in counts]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="diffusion run or pipeline")
    parser.add_argument("--data", required=True, help="the real dataset the model was trained on")
    parser.add_argument("--layout", default="auto")
    parser.add_argument("--num", type=int, default=128, help="generated clips per point")
    parser.add_argument("--grid", default=DEFAULT_GRID, help="sampler:steps,...:eta;...")
    parser.add_argument("--reference-point", default=REFERENCE, help="sampler:steps:eta")
    parser.add_argument("--spread", type=int, default=3, help="seed sets at the reference point")
    parser.add_argument(
        "--point-seeds", type=int, default=1,
        help="seed sets at every grid point (the chart shows their mean)",
    )  # fmt: skip
    parser.add_argument("--reference-cache", type=Path, help="file for the reference features")
    parser.add_argument("--i3d", default="i3d_k400", help="FVD detector (path or weights name)")
    parser.add_argument("--trust-detector-code", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reference clips")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sampling.json")
    args = parser.parse_args()
    if args.num < 2 or not all(1 <= n <= len(SEED_SETS) for n in (args.spread, args.point_seeds)):
        parser.error(f"--num must be at least 2, --spread and --point-seeds in 1..{len(SEED_SETS)}")
    grid = parse_grid(args.grid)
    (reference,) = parse_grid(args.reference_point)
    report = run(args, grid, reference)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} and {report['chart']}")


@torch.no_grad()
def run(args: argparse.Namespace, grid: list, reference: tuple) -> dict[str, Any]:
    from pvdm.charts import line_chart_png
    from pvdm.data import DataConfig
    from pvdm.diffusion import PVDMPipeline, SamplingConfig
    from pvdm.metrics.ladder import reference_features
    from pvdm.metrics.protocols import load_fvd_detector
    from pvdm.metrics.stats import frechet_distance

    pipe = PVDMPipeline.from_pretrained(args.model, device=args.device)
    res = int(pipe.autoencoder.config.resolution)
    detector = load_fvd_detector(
        args.i3d, device=args.device, batch_size=args.batch_size,
        trust_code=args.trust_detector_code,
    )  # fmt: skip
    data = DataConfig(path=args.data, layout=args.layout, resolution=res, frames=16)
    ref_feats, num_ref = reference_features(
        detector, data, args.num, args.seed, args.reference_cache
    )
    load = os.getloadavg()[0]
    log = args.out.with_suffix(".points.jsonl")
    # a logged point is reused only when it was measured the same way
    same = json.loads(json.dumps({  # as the log stores it
        "model": str(args.model),
        "data": str(args.data),
        "detector": detector.describe(),
        "reference": f"{num_ref} real 16-frame train clips (seed {args.seed})",
    }))  # fmt: skip
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if all(row.get(k) == v for k, v in same.items()):
                done[(row["label"], row["seed"], row["num"])] = row

    def point(sampler: str, steps: int | None, eta: float, seed: int) -> dict[str, Any]:
        request = pipe.resolve(
            SamplingConfig(sampler=sampler, steps=steps, eta=eta),
            num=args.num, frames=16, seed=seed, batch_size=args.batch_size,
        )  # fmt: skip
        if (request.label(), seed, args.num) in done:
            return done[(request.label(), seed, args.num)]
        nfe: dict[int, int] = {}

        def count(info: dict[str, Any]) -> None:  # network evaluations of each clip index
            nfe[info["clip"]] = info["evaluations"]

        t0 = time.perf_counter()
        videos = pipe(request, callback=count, progress=False)
        seconds = time.perf_counter() - t0
        clips = -(-16 // pipe.clip_frames)
        row = {
            "sampler": sampler,
            "label": request.label(),
            "steps": request.steps,
            "eta": request.record()["eta"],
            "seed": seed,
            "nfe_per_clip": max(nfe.values()),
            "sec_per_clip": seconds / (args.num * clips),
            "fvd": float(frechet_distance(ref_feats, detector(videos), ddof=0)),
            "num": args.num,
            "load_avg_1min": os.getloadavg()[0],
            **same,
        }
        print(json.dumps(row), flush=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    spread = [point(*reference, seed) for seed in SEED_SETS[: args.spread]]
    fvds = [r["fvd"] for r in spread]
    seeds = SEED_SETS[: args.point_seeds]
    points = [point(s, n, e, seed) for s, n, e in grid for seed in seeds]
    # the same points measured earlier on other seed sets count too (their mean is charted)
    labels = {row["label"] for row in points}
    points += [
        row for row in done.values()
        if row["label"] in labels and row["num"] == args.num and row["seed"] not in seeds
    ]  # fmt: skip
    by_point: dict[tuple[str, int], list[float]] = {}
    for row in points:
        name = row["label"].rsplit("-", 1)[0]
        name += f" eta {row['eta']:g}" if row["eta"] is not None else ""
        by_point.setdefault((name, row["nfe_per_clip"]), []).append(row["fvd"])
    series: dict[str, list[tuple[float, float]]] = {}
    for (name, nfe), fvds_here in by_point.items():  # the mean over seed sets
        series.setdefault(name, []).append((nfe, statistics.fmean(fvds_here)))
    chart = args.out.with_suffix(".png")
    band = (min(fvds), max(fvds))
    line_chart_png(
        chart, series, title=f"FVD ({args.num} clips) against network evaluations per clip",
        x_label="network evaluations per clip (NFE)", y_label="FVD",
        band=band, band_label=f"{spread[0]['label']}, {len(fvds)} seed sets",
    )  # fmt: skip
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": str(args.model),
        "data": str(args.data),
        "detector": same["detector"],
        "reference": same["reference"],
        "threads": torch.get_num_threads(),
        "load_avg_1min": [load, os.getloadavg()[0]],
        "reference_point": {
            "label": spread[0]["label"],
            "fvd": fvds,
            "mean": statistics.fmean(fvds),
            "spread": band,
            "seeds": list(SEED_SETS[: args.spread]),
        },
        "points": points,
        "chart": str(chart),
    }


if __name__ == "__main__":
    main()
