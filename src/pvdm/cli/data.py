"""`pvdm data inspect` and `pvdm data preview`: check a dataset and look at its training clips."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

LAYOUTS = ("auto", "ucf101", "sky", "folder", "synthetic")


def register(subparsers: Any) -> None:
    """Add the `data` command and its `inspect` and `preview` subcommands."""
    parser = subparsers.add_parser(
        "data",
        help="inspect a dataset or preview its training clips",
        description="Inspect a video dataset or preview the clips training would see.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    inspect = sub.add_parser(
        "inspect",
        help="layout, videos, classes, skipped files and frame/size ranges of a dataset",
        description=(
            "Scan a dataset (cached afterwards) and report its layout, usable and skipped videos "
            "(with reasons), classes, and frame-count and resolution ranges. Exits non-zero when "
            "no video is usable."
        ),
    )
    _add_source_args(inspect)
    inspect.add_argument("--frames", type=int, default=16, help="clip length to check (16)")
    inspect.add_argument("--stride", type=int, default=1, help="frame stride of a clip (1)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.set_defaults(func=_inspect)

    preview = sub.add_parser(
        "preview",
        help="write clips exactly as the training loader produces them",
        description=(
            "Write NUM clips from the training loader to a .gif or .mp4 (videos in a grid) or "
            ".png (rows = clips, columns = frames)."
        ),
    )
    _add_source_args(preview)
    preview.add_argument(
        "--out", required=True, help="output file: .gif, .mp4 or .png (parent folders are created)"
    )
    preview.add_argument("--frames", type=int, default=16, help="frames per clip (16)")
    preview.add_argument("--resolution", type=int, default=128, help="clip side in pixels (128)")
    preview.add_argument("--num", type=int, default=8, help="number of clips (8)")
    preview.add_argument("--stride", type=int, default=1, help="frame stride (1)")
    preview.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    preview.add_argument("--batch", type=int, default=0, help="loader batch index to show (0)")
    preview.add_argument("--fps", type=float, default=8, help="frame rate of .gif/.mp4 (8)")
    preview.add_argument("--every", type=int, default=1, help=".png: every k-th frame (1)")
    preview.add_argument("--workers", type=int, default=0, help="loader worker processes (0)")
    preview.set_defaults(func=_preview)


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="dataset folder, a video file, or 'synthetic'")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto", help="dataset layout (auto)")
    parser.add_argument("--split", default="train", help="train, test or all (train)")
    parser.add_argument("--fold", type=int, default=1, help="UCF-101 split fold 1-3 (1)")
    parser.add_argument(
        "--no-cache", action="store_true", help="rescan every file instead of using the cache"
    )


def _config(args: argparse.Namespace, **fields: Any) -> Any:
    from pvdm.data import DataConfig
    from pvdm.errors import ConfigError, DataError

    # Synthetic videos grow to fit a long clip (their length is a config field, not a flag).
    span = (fields["frames"] - 1) * fields["stride"] + 1
    fields.setdefault("synthetic_frames", max(DataConfig.synthetic_frames, span))
    cfg = DataConfig(
        path=args.path,
        layout=args.layout,
        split=args.split,
        fold=args.fold,
        cache=not args.no_cache,
        **fields,
    )
    try:
        cfg.validate()
    except ConfigError as e:
        raise DataError(str(e).replace("data.", "--")) from None
    return cfg


def _inspect(args: argparse.Namespace) -> int:
    from pvdm.data import build_dataset
    from pvdm.data.dataset import no_video_message
    from pvdm.errors import DataError

    cfg = _config(args, frames=args.frames, stride=args.stride)
    dataset = build_dataset(cfg)
    report = _report(cfg, dataset)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if len(dataset) == 0:
        raise DataError(no_video_message(cfg.path, dataset))
    return 0


def _report(cfg: Any, dataset: Any) -> dict[str, Any]:
    videos = dataset.videos
    report: dict[str, Any] = {
        "path": cfg.path,
        "layout": dataset.layout,
        "split": cfg.split,
        "fold": cfg.fold if dataset.layout == "ucf101" else None,
        "clip_frames": dataset.span,
        "usable": len(videos),
        "skipped": len(dataset.skipped),
        "classes": len(dataset.classes) if dataset.classes else 0,
        "class_names": dataset.classes or [],
        "skip_reasons": dict(Counter(r.split(" (")[0] for _, r in dataset.skipped)),
        "skipped_files": [{"path": p, "reason": r} for p, r in dataset.skipped],
    }
    if videos:
        report["frames"] = [min(v.num_frames for v in videos), max(v.num_frames for v in videos)]
        report["height"] = [min(v.height for v in videos), max(v.height for v in videos)]
        report["width"] = [min(v.width for v in videos), max(v.width for v in videos)]
        report["fps"] = [min(v.fps for v in videos), max(v.fps for v in videos)]
        if dataset.classes:
            counts = Counter(v.label for v in videos)
            report["videos_per_class"] = [min(counts.values()), max(counts.values())]
    return report


def _print_report(r: dict[str, Any]) -> None:
    split = f"split {r['split']}" + (f", fold {r['fold']}" if r["fold"] else "")
    print(f"path:     {r['path']}")
    print(f"layout:   {r['layout']} ({split})")
    total = r["usable"] + r["skipped"]
    print(f"videos:   {r['usable']} usable, {r['skipped']} skipped (of {total})")
    if r["classes"]:
        names = ", ".join(r["class_names"][:5]) + (", ..." if r["classes"] > 5 else "")
        per = r.get("videos_per_class")
        spread = f"; {per[0]}-{per[1]} usable videos per class" if per else ""
        print(f"classes:  {r['classes']} ({names}){spread}")
    else:
        print("classes:  none (unlabelled)")
    if r["usable"]:
        print(f"frames:   {_range(r['frames'])} per video (a clip spans {r['clip_frames']})")
        print(f"size:     {_range(r['height'])} x {_range(r['width'])} (height x width)")
        fps = r["fps"]
        print(f"fps:      {_range([round(f, 2) for f in fps]) if fps[1] > 0 else 'n/a (frames)'}")
    if r["skipped"]:
        reasons = ", ".join(f"{n} {k}" for k, n in r["skip_reasons"].items())
        print(f"skipped:  {reasons}")
        for item in r["skipped_files"]:
            print(f"  {item['path']}: {item['reason']}")


def _range(values: list[Any]) -> str:
    low, high = values
    return f"{low}" if low == high else f"{low}-{high}"


def _preview(args: argparse.Namespace) -> int:
    from pvdm.data import make_loader, open_dataset, write_video
    from pvdm.errors import DataError

    if args.num < 1 or args.every < 1 or args.batch < 0 or args.fps <= 0 or args.workers < 0:
        raise DataError("--num, --every and --fps must be positive; --batch and --workers >= 0")
    if not args.out.lower().endswith((".gif", ".mp4", ".png")):
        raise DataError(f"--out {args.out} must end in .gif, .mp4 or .png")
    cfg = _config(args, frames=args.frames, resolution=args.resolution, stride=args.stride)
    dataset = open_dataset(cfg)
    loader = make_loader(
        dataset,
        batch_size=args.num,
        seed=args.seed,
        start_batch=args.batch,
        num_workers=args.workers,
    )
    batch = next(iter(loader))
    path = write_video(args.out, batch["video"], fps=args.fps, every=args.every)
    print(
        f"wrote {path}: {args.num} clips of {args.frames} frames at "
        f"{args.resolution}x{args.resolution} from {dataset.layout} ({len(dataset)} videos)",
        file=sys.stderr,
    )
    return 0
