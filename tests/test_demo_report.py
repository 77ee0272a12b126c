"""`pvdm demo` end to end on a tiny budget: Ctrl-C stops it cleanly, re-running resumes, and the
report opens in a real headless browser (Debian's Chromium) with every image and video loaded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, NO_CHROMIUM, chromium_flags
from train_helpers import pvdm_env

CHECK_PAGE = """<!doctype html><html><body>
<iframe id="report" src="report.html" style="width:1200px;height:6000px"></iframe>
<script>
function check() {
  const doc = document.getElementById("report").contentDocument;
  const images = [...doc.images].map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  const videos = [...doc.querySelectorAll("video")].map(v => ({src: v.currentSrc || v.getAttribute("src"), ok: v.readyState >= 2, error: v.error ? v.error.code : null}));
  const svgs = doc.querySelectorAll("svg polyline").length;
  document.body.setAttribute("data-result", JSON.stringify({images, videos, svgs}));
}
window.addEventListener("load", () => setTimeout(check, 2000));
</script></body></html>"""


def _demo(out: Path) -> list[str]:
    return [sys.executable, "-m", "pvdm", "demo", "--out", str(out), "--minutes", "0.4"]


def browser_check(report: Path) -> dict:
    """Open report.html (through a checking page) in headless Chromium; what loaded."""
    check = report.parent / "_check.html"
    check.write_text(CHECK_PAGE)
    flags = [
        *chromium_flags(report.parent / "_chromium"),
        "--allow-file-access-from-files", "--autoplay-policy=no-user-gesture-required",
        "--virtual-time-budget=8000", "--dump-dom",
    ]  # fmt: skip
    proc = subprocess.run(
        [CHROMIUM, *flags, check.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'data-result="' in proc.stdout, proc.stderr[-2000:]
    raw = proc.stdout.split('data-result="', 1)[1].split('"', 1)[0]
    return json.loads(raw.replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.slow
def test_demo_interrupt_resume_and_report_in_a_browser(tmp_path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        _demo(out), env=pvdm_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stats = out / "autoencoder" / "stats.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (
        stats.is_file() and stats.read_text().count("\n") >= 2
    ):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr[-3000:]
    assert "run the same command to resume" in stdout
    assert not (out / "report.html").exists()

    proc = subprocess.run(_demo(out), env=pvdm_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr
    report = out / "report.html"
    state = json.loads((out / "demo.json").read_text())
    assert state["done"] == ["autoencoder", "latents", "diffusion"]
    metrics = state["metrics"]
    assert 5.0 < metrics["recon_psnr_db"] < 60.0 and 0.0 < metrics["recon_ssim"] <= 1.0
    assert metrics["long_video_frames"] >= 8 * 8  # at least 8 clips
    assert metrics["sampler"] == {"sampler": "ddim-quad", "steps": 8, "eta": 1.0}  # the default
    html = report.read_text()
    for name in ("reconstruction.gif", "samples.gif", "long.mp4", "continuation.gif"):
        assert f"report_files/{name}" in html and (out / "report_files" / name).stat().st_size > 0

    if CHROMIUM is None:
        pytest.skip(f"{NO_CHROMIUM}; report not opened")
    result = browser_check(report)
    assert result["images"] and all(i["ok"] for i in result["images"]), result
    assert result["videos"] and all(v["ok"] for v in result["videos"]), result
    assert result["svgs"] >= 3
