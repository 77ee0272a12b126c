"""PNG charts drawn with Pillow (no plotting library): the FVD ladder of benchmarks/quality.py
and the sampler frontier of benchmarks/sampling.py."""

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


_LINE_COLOURS = [
    (66, 110, 180),
    (200, 80, 60),
    (60, 150, 80),
    (150, 90, 170),
    (220, 150, 40),
    (0, 160, 170),
    (140, 90, 50),
    (90, 90, 90),
    (220, 100, 160),
    (150, 150, 30),
]


def line_chart_png(
    path: str | os.PathLike,
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    band: tuple[float, float] | None = None,
    band_label: str = "",
    width: int = 900,
    height: int = 520,
) -> None:
    """Lines of (x, y) points on a log x axis and a linear y axis, one colour per series, and an
    optional horizontal band (e.g. a reference value's seed-to-seed spread)."""
    left, right, top, bottom = 70, 230, 40, 50
    img = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title, fill=_FG)
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    xs = [x for x, _ in points] or [1.0]
    ys = [y for _, y in points] + (list(band) if band else []) or [0.0, 1.0]
    x_lo = 10 ** math.floor(math.log10(min(xs)))
    x_hi = 10 ** math.ceil(math.log10(max(xs) * 1.0001))
    y_lo, y_hi = 0.0, max(ys) * 1.08
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + _log_pos(x, x_lo, x_hi) * plot_w,
            top + plot_h - (y - y_lo) / max(y_hi - y_lo, 1e-9) * plot_h,
        )

    decade = x_lo
    while decade <= x_hi:
        for m in (1, 2, 5):
            if x_lo <= m * decade <= x_hi:
                x, _ = at(m * decade, 0)
                draw.line([(x, top), (x, top + plot_h)], fill=_GRID)
                draw.text((x - 6, top + plot_h + 6), f"{m * decade:g}", fill=_FG)
        decade *= 10
    tick = 10 ** math.floor(math.log10(max(y_hi, 1e-9)))
    for k in range(int(y_hi // tick) + 1):
        _, y = at(x_lo, k * tick)
        draw.line([(left, y), (left + plot_w, y)], fill=_GRID)
        draw.text((8, y - 6), f"{k * tick:g}", fill=_FG)
    draw.text((left + plot_w // 2 - 40, height - 22), x_label, fill=_FG)
    draw.text((8, 24), y_label, fill=_FG)
    if band:
        (_, y0), (_, y1) = at(x_lo, band[0]), at(x_lo, band[1])
        draw.rectangle([left, min(y0, y1), left + plot_w, max(y0, y1)], fill=(235, 235, 235))
        draw.text((left + plot_w + 10, min(y0, y1)), band_label[:32], fill=_FG)
    for i, (name, pts) in enumerate(series.items()):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        xy = [at(x, y) for x, y in sorted(pts) if math.isfinite(y)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((left + plot_w + 10, top + 18 * i + 40), name[:32], fill=colour)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
