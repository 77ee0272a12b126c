"""PNG charts drawn with Pillow (no plotting library): the FVD ladder of benchmarks/quality.py."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw

from pvdm.atomic import atomic_path

_BG, _FG, _GRID = (255, 255, 255), (30, 30, 30), (210, 210, 210)
_BAR = (66, 110, 180)


def _log_pos(value: float, lo: float, hi: float) -> float:
    v = max(value, lo)
    return (math.log10(v) - math.log10(lo)) / max(math.log10(hi) - math.log10(lo), 1e-9)


def bar_chart_png(
    path: str | os.PathLike,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    width: int = 900,
) -> None:
    """Horizontal bars on a log axis (FVDs span orders of magnitude), value printed at each."""
    row, left, top = 26, 330, 40
    height = top + row * len(labels) + 40
    img = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title, fill=_FG)
    finite = [v for v in values if math.isfinite(v) and v > 0] or [1.0]
    lo = 10 ** math.floor(math.log10(min(finite)))
    hi = 10 ** math.ceil(math.log10(max(finite) * 1.0001))
    span = width - left - 90
    decade = lo
    while decade <= hi:
        x = left + _log_pos(decade, lo, hi) * span
        draw.line([(x, top - 4), (x, height - 30)], fill=_GRID)
        draw.text((x - 10, height - 26), f"{decade:g}", fill=_FG)
        decade *= 10
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        draw.text((10, y + 6), label[:52], fill=_FG)
        if math.isfinite(value) and value > 0:
            x = left + _log_pos(value, lo, hi) * span
            draw.rectangle([left, y + 4, max(left + 1, x), y + row - 6], fill=_BAR)
            draw.text((x + 6, y + 6), f"{value:.1f}", fill=_FG)
        else:
            draw.text((left + 4, y + 6), "n/a", fill=_FG)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
