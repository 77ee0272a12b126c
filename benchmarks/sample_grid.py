"""Side-by-side sample pictures of several models: the same seeds, one block of rows per model.

    python benchmarks/sample_grid.py --out docs/images/sky-samples-gradient-term.png \
        --model "before: ...=runs/sky-dm-old" --model "after: ...=runs/sky-dm"

Each block is `--num` videos of `--frames` frames (one row per video, every frame shown), made
with `--sampler`/`--steps` from seeds 0..num-1, under its title.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument(
        "--model", action="append", required=True, metavar="TITLE=PATH", help="repeatable"
    )
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    if any("=" not in m for m in args.model):
        parser.error("--model takes TITLE=PATH")

    from PIL import Image, ImageDraw

    from pvdm.diffusion.pipeline import PVDMPipeline

    blocks = []
    for item in args.model:
        title, path = item.rsplit("=", 1)
        pipe = PVDMPipeline.from_pretrained(path)
        videos = pipe(
            num=args.num, frames=args.frames, sampler=args.sampler, steps=args.steps, seed=0,
            progress=False,
        )  # fmt: skip
        blocks.append((title, videos))  # uint8 [N, 3, T, H, W]
    h, w = blocks[0][1].shape[-2:]
    gap, head = 2, 18
    img = Image.new(
        "RGB", (args.frames * (w + gap), len(blocks) * (head + args.num * (h + gap))), "white"
    )
    draw, y = ImageDraw.Draw(img), 0
    for title, videos in blocks:
        draw.text((4, y + 3), title, fill="black")
        y += head
        for row, video in enumerate(videos):
            for t in range(video.shape[1]):
                frame = Image.fromarray(video[:, t].permute(1, 2, 0).numpy())
                img.paste(frame, (t * (w + gap), y + row * (h + gap)))
        y += args.num * (h + gap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out)
    print(f"wrote {args.out} {img.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
