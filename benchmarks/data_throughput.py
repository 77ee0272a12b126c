"""Clip throughput: seek-based decoding (pvdm) vs decoding whole files (the official loader).

Creates long H.264 mp4 files (default 4 videos of 12 s at 640x360, 30 fps, GOP 15) by looping
the real clips in ../shared/data/clips back and forth (synthetic frames if they are absent),
then reads random 16-frame clips at 256x256 both ways, for the same videos and start frames:
- seek: `VideoDataset[ClipRequest]`, i.e. seek to the keyframe before the clip and decode on;
- whole_file: decode every frame of the video, take 16, crop and resize (what the official
  `VideoFolderDataset` does with `torchvision.io.read_video` for every sample).
Both run in one process with one torch thread (like one loader worker). Writes JSON with the
median clips per second over repeats and the ratio.

    PYTHONPATH=src python benchmarks/data_throughput.py --out benchmarks/results/data_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from pvdm.atomic import atomic_write_text
from pvdm.data import ClipRequest, DataConfig, center_crop_resize, open_dataset
from pvdm.data.decode import decode_all
from pvdm.data.synthetic import SyntheticVideos
from pvdm.data.write import encode_video

CLIPS_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clips"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/data_throughput.json")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=15)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--clips", type=int, default=16, help="clips per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="pvdm-bench-") as tmp:
        folder = Path(tmp) / "videos"
        num_frames = round(args.seconds * args.fps)
        sources = make_videos(folder, args, num_frames)
        os.environ["PVDM_CACHE"] = str(Path(tmp) / "cache")
        cfg = DataConfig(path=str(folder), resolution=args.resolution, frames=args.frames)
        start = time.perf_counter()
        dataset = open_dataset(cfg)
        scan_sec = time.perf_counter() - start
        rng = np.random.default_rng(args.seed)
        seek_runs, whole_runs = [], []
        for _ in range(args.repeats):
            requests = [
                ClipRequest(int(rng.integers(len(dataset))), int(rng.integers(2**31)))
                for _ in range(args.clips)
            ]
            seek_sec, clips = time_seek(dataset, requests)
            whole_sec, reference = time_whole_file(dataset, clips)
            if not all(torch.equal(a[2], b) for a, b in zip(clips, reference)):
                raise SystemExit("seek-based and whole-file clips differ: decoding bug")
            seek_runs.append(args.clips / seek_sec)
            whole_runs.append(args.clips / whole_sec)
            print(
                f"seek {seek_runs[-1]:.2f} clips/s, whole file {whole_runs[-1]:.2f} clips/s",
                file=sys.stderr,
            )

    seek, whole = statistics.median(seek_runs), statistics.median(whole_runs)
    result = {
        "benchmark": "data_throughput",
        "what": f"{args.frames}-frame {args.resolution}x{args.resolution} uint8 clips per second, "
        "one process, one torch thread",
        "videos": {
            "count": args.videos,
            "frames_each": num_frames,
            "seconds_each": args.seconds,
            "size": f"{args.width}x{args.height}",
            "fps": args.fps,
            "gop": args.gop,
            "codec": "h264 (libx264), yuv420p, mp4",
            "content": sources,
        },
        "clips_per_repeat": args.clips,
        "repeats": args.repeats,
        "seek_clips_per_sec": {"median": seek, "runs": seek_runs},
        "whole_file_clips_per_sec": {"median": whole, "runs": whole_runs},
        "speedup_median": seek / whole,
        "outputs_identical": True,
        "scan_sec": scan_sec,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pyav": av.__version__,
        },
        "note": "timings on a shared machine; other processes may have been running",
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"seek {seek:.2f} clips/s vs whole file {whole:.2f} clips/s: {seek / whole:.1f}x")
    print(f"wrote {args.out}")
    return 0


def make_videos(folder: Path, args: argparse.Namespace, num_frames: int) -> str:
    """Write `args.videos` long mp4 files; returns a description of their content."""
    clips = sorted(CLIPS_DIR.glob("*.mp4")) if CLIPS_DIR.is_dir() else []
    for i in range(args.videos):
        if clips:
            source = decode_all(clips[i % len(clips)])
            source = np.stack(
                [
                    np.asarray(Image.fromarray(f).resize((args.width, args.height), Image.BILINEAR))
                    for f in source
                ]
            )
        else:
            side = max(args.width, args.height)
            source = SyntheticVideos(args.videos, 64, side, seed=i).frames(i, range(64))
            source = source[:, : args.height, : args.width]
        # Play forward then backward, repeatedly, so motion stays continuous.
        loop = np.concatenate([source, source[-2:0:-1]])
        frames = loop[np.arange(num_frames) % len(loop)]
        encode_video(folder / f"long_{i}.mp4", frames, fps=args.fps, gop=args.gop)
    if clips:
        return f"real clips from ../shared/data/clips, resized and looped ({len(clips)} sources)"
    return "synthetic frames (../shared/data/clips not found)"


def time_seek(dataset, requests) -> tuple[float, list[tuple[int, int, torch.Tensor]]]:
    """Seconds to read the requested clips by seeking, and (video, start, clip) of each."""
    start = time.perf_counter()
    items = [dataset[r] for r in requests]
    elapsed = time.perf_counter() - start
    return elapsed, [(item["index"], item["start"], item["video"]) for item in items]


def time_whole_file(dataset, seek_items) -> tuple[float, list[torch.Tensor]]:
    """Seconds to read the same clips by decoding each whole video, and the clips."""
    start = time.perf_counter()
    clips = []
    for index, first, _ in seek_items:
        frames = decode_all(dataset.videos[index].path)
        clips.append(center_crop_resize(frames[first : first + dataset.span], dataset.resolution))
    elapsed = time.perf_counter() - start
    return elapsed, clips


if __name__ == "__main__":
    sys.exit(main())
