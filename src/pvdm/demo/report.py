"""The demo's `report.html`: one self-contained page (plots inline as SVG, media beside it).

Shows the loss curves, real vs reconstructed clips, generated clips, the long video, the
continuation, the metrics, the exact configs and the timings. It needs no network: images and
videos are files in `report_files/` next to it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import yaml

from pvdm.atomic import atomic_write_text
from pvdm.jsonl import read_lines
from pvdm.runs import RunFolder


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    *,
    width: int = 420,
    height: int = 240,
    log_y: bool = False,
) -> str:
    """An SVG line chart of named (x, y) series."""
    import math

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    points = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if log_y:
        points = [(x, y) for x, y in points if y > 0]
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"

    def ty(y: float) -> float:
        return math.log10(y) if log_y else y

    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(ty(p[1]) for p in points), max(ty(p[1]) for p in points)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    left, right, top, bottom = 56, 12, 28, 32

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (ty(y) - y0) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
        'fill="none" stroke="#999"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        label = 10**yv if log_y else yv
        ypix = height - bottom - frac * (height - top - bottom)
        parts.append(
            f'<text x="{left - 4}" y="{ypix + 4}" text-anchor="end" font-size="10">{label:.3g}</text>'
        )
    for frac in (0.0, 0.5, 1.0):
        xv = x0 + frac * (x1 - x0)
        parts.append(
            f'<text x="{sx(xv)}" y="{height - bottom + 14}" text-anchor="middle" font-size="10">'
            f"{xv:.0f}</text>"
        )
    parts.append(
        f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" font-size="10">step</text>'
    )
    for i, (name, pts) in enumerate(series.items()):
        pts = [(x, y) for x, y in pts if math.isfinite(y) and (y > 0 or not log_y)]
        if not pts:
            continue
        color = colors[i % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        parts.append(
            f'<text x="{left + 6}" y="{top + 14 + 13 * i}" font-size="11" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def read_stats(run: Path) -> list[dict[str, Any]]:
    """The rows of a run's stats.jsonl."""
    path = RunFolder(run).stats
    if not path.is_file():
        return []
    return read_lines(path)


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(r["step"], float(r[key])) for r in rows if key in r]


def _media(name: str, caption: str, files: Path) -> str:
    path = files / name
    if not path.is_file():
        return ""
    src = f"report_files/{name}"
    if name.endswith(".mp4"):
        element = f'<video src="{src}" controls loop muted autoplay playsinline></video>'
    else:
        element = f'<img src="{src}" alt="{html.escape(caption)}">'
    return f"<figure>{element}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    labels = {
        "recon_psnr_db": "Reconstruction PSNR (dB), held-out clips",
        "recon_ssim": "Reconstruction SSIM, held-out clips",
        "recon_clips": "Held-out clips evaluated",
        "long_video_frames": "Long video length (frames)",
    }
    for key, label in labels.items():
        if key in metrics:
            value = metrics[key]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append(f"<tr><td>{html.escape(label)}</td><td>{text}</td></tr>")
    fvd = metrics.get("fvd") or {"skipped": "not computed"}
    if "skipped" in fvd:
        rows.append(f"<tr><td>FVD</td><td>skipped: {html.escape(str(fvd['skipped']))}</td></tr>")
    sampler = metrics.get("sampler")
    if sampler:
        rows.append(f"<tr><td>Sampler</td><td>{html.escape(json.dumps(sampler))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def fvd_section(fvd: dict[str, Any]) -> str:
    """The ladder as a table and the drift curve as a chart (empty when FVD was skipped): in FVD,
    or in kernel distance (KID) where the clips per rung are too few for FVD to rank."""
    if not fvd or "rungs" not in fvd:
        return ""
    kid = fvd.get("statistic") == "kid_x1000"

    def value(r: dict[str, Any]) -> str:
        if kid:
            return f"{r['kid_x1000']:.1f} &plusmn; {r['kid_x1000_spread']:.1f}"
        return f"{r['fvd']:.1f}"

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{value(r)}</td><td>{r['num']}</td></tr>"
        for name, r in fvd["rungs"].items()
    )
    label = "KID x 1000" if kid else "FVD"
    drift = fvd.get("drift", {})
    window = drift.get("window_frames", 16)
    curve = drift.get("kid_x1000" if kid else "fvd", [])
    points = [((i + 1) * window, v) for i, v in enumerate(curve)]
    chart = line_chart(
        {f"{label} per {window}-frame window": points},
        f"drift: long videos ({drift.get('num_videos', '?')}) window by window",
    ).replace(">step</text>", ">last frame of the window</text>")
    detector = fvd.get("detector", {})
    return f"""<h2>Quality ladder ({label})</h2>
<p>Every rung against the same reference ({html.escape(str(fvd.get("reference", "")))}), detector
<code>{html.escape(str(detector.get("name")))}</code> ({html.escape(str(detector.get("source")))},
BatchNorm eps {detector.get("bn_eps")}). {html.escape(str(fvd.get("note", "")))}.</p>
<table><tr><td><b>rung</b></td><td><b>{label}</b></td><td><b>clips</b></td></tr>{rows}</table>
{chart}"""


def write_report(out: str | Path, *, state: dict[str, Any], configs: dict[str, Any]) -> Path:
    """Write OUT/report.html from the demo's runs, files and state."""
    out = Path(out)
    files = out / "report_files"
    ae_rows = read_stats(out / "autoencoder")
    dm_rows = read_stats(out / "diffusion")
    ae_chart = line_chart(
        {k: _series(ae_rows, k) for k in ("l1", "lpips", "g_adv", "d_loss") if _series(ae_rows, k)},
        "autoencoder training loss",
        log_y=True,
    )
    psnr_chart = line_chart(
        {"held-out PSNR (dB)": _series(ae_rows, "heldout_psnr")}, "reconstruction quality"
    )
    dm_chart = line_chart({"loss": _series(dm_rows, "loss")}, "diffusion training loss", log_y=True)
    timing_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v / 60:.1f} min</td></tr>"
        for k, v in state["seconds"].items()
    )
    metrics = state.get("metrics", {})
    cont = metrics.get("continuation", {})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pvdm demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
figure {{ display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }}
img, video {{ image-rendering: pixelated; width: 512px; max-width: 100%; border: 1px solid #ccc; }}
figcaption {{ font-size: 0.9em; color: #555; max-width: 512px; }}
table {{ border-collapse: collapse; }} td {{ border: 1px solid #ddd; padding: 0.3em 0.6em; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.8em; }}
</style></head><body>
<h1>pvdm demo</h1>
<p>The whole PVDM pipeline trained from scratch on <code>{html.escape(str(state["data"]))}</code>
within a budget of {state["minutes"]:g} minutes: a triplane autoencoder
({state["ae_steps"]} steps), latent caching, and a triplane diffusion model ({state["dm_steps"]} steps),
then sampling. Models this small and this briefly trained show the mechanics, not the paper's quality.</p>
<h2>Training</h2>
{ae_chart} {psnr_chart} {dm_chart}
<h2>Real vs reconstructed</h2>
{_media("reconstruction.gif", "held-out clips (left) and their reconstructions (right)", files)}
<h2>Generated clips</h2>
{_media("samples.gif", "generated videos of 16 frames", files)}
{_media("samples.png", "their frames", files)}
<h2>Long video</h2>
{_media("long.mp4", f"{metrics.get('long_video_frames', '?')} frames generated clip by clip, each clip conditioned on the previous one", files)}
{_media("long.png", "its frames (every few)", files)}
<h2>Continuation</h2>
{_media("continuation.gif", f"left: a held-out video; right: its first {cont.get('given_frames', '?')} frames continued by the model ({cont.get('generated_frames', '?')} generated frames)", files)}
<h2>Metrics</h2>
{_metrics_table(metrics)}
{fvd_section(metrics.get("fvd", {}))}
<h2>Timings</h2>
<table>{timing_rows}</table>
<h2>Configuration</h2>
<pre>{html.escape(yaml.safe_dump(configs, sort_keys=False))}</pre>
</body></html>
"""
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
