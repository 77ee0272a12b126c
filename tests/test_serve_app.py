"""`pvdm serve` for real: a server on a free local port with a tiny trained model, driven with
gradio_client (both endpoints, bad uploads) and with headless Chromium (press Generate, the
video loads); `--help` and the errors for a missing or wrong `--model`."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from browser_helpers import CHROMIUM, NO_CHROMIUM, Browser
from serve_helpers import Server, tiny_run, video_file
from train_helpers import run_pvdm

from pvdm.data import read_video
from pvdm.diffusion import DEFAULT_SAMPLER, SamplingConfig

pytest.importorskip("gradio", reason='the app extra is not installed (pip install -e ".[app]")')
gradio_client = pytest.importorskip("gradio_client")

pytestmark = pytest.mark.slow  # a real server (and Chromium) per module

CLIP = 4  # the tiny model's clip length
FPS = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-out") / "videos"
    server = Server(model, out)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server.url, verbose=False)


def _frames(path: str) -> int:
    video = read_video(path)
    assert video.shape[0] == 3 and video.shape[2:] == (16, 16)
    return video.shape[1]


def test_api_has_the_two_named_endpoints(client) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/sample", "/continue", "/cancel"}
    names = [p["parameter_name"] for p in endpoints["/sample"]["parameters"]]
    assert names[:3] == ["num", "frames", "sampler"] and "progress" not in names
    assert all(p["parameter_has_default"] for p in endpoints["/sample"]["parameters"])


def test_sample_with_every_input_at_its_default(client, model) -> None:
    from pvdm.diffusion import PVDMPipeline

    gallery, files, info = client.predict(api_name="/sample")
    assert len(gallery) == len(files) == 1 and gallery[0]["caption"] == "seed 0"
    assert files[0].endswith(".mp4") and _frames(files[0]) == CLIP
    default = PVDMPipeline.from_pretrained(model).resolve(SamplingConfig())
    assert info["sampler"] == default.sampler == DEFAULT_SAMPLER
    assert info["steps"] == default.steps and info["seeds"] == [0]


def test_sample_a_long_class_conditional_batch(client) -> None:
    _, files, info = client.predict(
        num=2, frames=10, sampler="ddim", steps=3, eta=0.5, seed=7, label="square",
        class_guidance=1.0, api_name="/sample",
    )  # fmt: skip
    assert [_frames(f) for f in files] == [10, 10]
    assert info["seeds"] == [7, 8] and info["clips_per_video"] == 3 and info["class"] == "square"
    assert read_video(files[0]).float().sub(read_video(files[1]).float()).abs().mean() > 5.0


def test_continue_needs_only_the_video(client, tmp_path) -> None:
    upload = video_file(tmp_path / "mine.avi", 6)
    given, continued, info = client.predict(gradio_client.handle_file(upload), api_name="/continue")
    assert _frames(given) == 6 and _frames(continued) == 6 + 2 * CLIP
    assert info["given_frames"] == 6 and info["generated_frames"] == 2 * CLIP


def test_bad_uploads_get_a_message_and_the_server_keeps_answering(client, server, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    with pytest.raises(gradio_client.exceptions.AppError, match="cannot read the uploaded video"):
        client.predict(gradio_client.handle_file(corrupt), api_name="/continue")
    short = video_file(tmp_path / "short.mp4", 2)
    with pytest.raises(gradio_client.exceptions.AppError, match="continuing needs at least 4"):
        client.predict(gradio_client.handle_file(short), api_name="/continue")
    assert server.alive()
    _, files, _ = client.predict(steps=2, api_name="/sample")
    assert _frames(files[0]) == CLIP


def test_cancel_stops_a_long_job_and_frees_the_queue(client) -> None:
    # 16 clips of 1000 DDPM steps: a minute or more on a CPU unless it is stopped
    job = client.submit(num=1, frames=64, sampler="ddpm", api_name="/sample")
    deadline = time.monotonic() + 30
    while job.status().code.name != "PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    client.predict(api_name="/cancel")
    with pytest.raises(gradio_client.exceptions.AppError, match="Cancelled"):
        job.result(timeout=30)
    _, files, _ = client.predict(steps=2, api_name="/sample")
    assert _frames(files[0]) == CLIP and time.monotonic() - started < 20


def test_another_clients_cancel_does_not_stop_my_job(client, server) -> None:
    job = client.submit(num=1, frames=12, sampler="ddim", steps=20, api_name="/sample")
    deadline = time.monotonic() + 30
    while job.status().code.name != "PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.05)
    gradio_client.Client(server.url, verbose=False).predict(api_name="/cancel")  # someone else
    _, files, info = job.result(timeout=120)
    assert _frames(files[0]) == 12 and info["steps"] == 20


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"num": 100}, "Value 100 is greater than maximum value 8"),
        ({"seed": 2**64}, r"seed must lie in \[0, 2\*\*63"),
        ({"seed": -1}, r"seed must lie in"),
        ({"steps": 2.5}, "steps must be a whole number"),
    ],
    ids=["slider-range", "seed-beyond-64-bits", "seed-negative", "fractional-steps"],
)
def test_bad_values_are_refused_in_one_log_line(client, server, inputs, message) -> None:
    before = server.log.read_text()
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(**inputs, api_name="/sample")
    new = server.log.read_text()[len(before) :]
    assert "Traceback" not in new and "request refused" in new
    assert server.alive()


def test_the_page_generates_a_playable_video_in_a_browser(server, tmp_path) -> None:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    with Browser(tmp_path / "chromium", width=1280, height=1100) as browser:
        browser.open(server.url)
        browser.wait_for("document.querySelector('#generate') !== null", timeout=60)
        frames = "document.querySelector('#frames input[type=number]')"
        browser.evaluate(
            f"(() => {{ const i = {frames}; i.value = 64; "
            "for (const e of ['input', 'change']) i.dispatchEvent(new Event(e, {bubbles: true})); })()"
        )
        # a long video: 16 clips, and the progress bar says which one is being sampled (every
        # text it shows is recorded, so a fast machine cannot finish between two polls)
        browser.evaluate(
            r"""window.seen = new Set(); new MutationObserver(records => {
                  for (const r of records) {
                    const m = (r.target.textContent || "").match(/clip \d+\/16/);
                    if (m) window.seen.add(m[0]);
                  }
                }).observe(document.body, {subtree: true, childList: true, characterData: true})"""
        )
        browser.click("document.querySelector('#generate')")
        videos = browser.wait_for(
            """(() => { const v = [...document.querySelectorAll('video')]
                  .filter(x => x.readyState >= 2 && !x.error);
                return v.length && v.map(x => ({src: x.currentSrc, duration: x.duration})); })()""",
            timeout=60,
        )
        assert "sample-0.mp4" in videos[0]["src"] and videos[0]["src"].startswith(server.url)
        assert videos[0]["duration"] == pytest.approx(64 / FPS, abs=0.05)
        progress = browser.evaluate("[...window.seen]")
        assert progress and all(p.startswith("clip ") for p in progress), progress
        settings = browser.wait_for(
            "document.querySelector('.json-holder, [data-testid=\"json\"]')?.innerText", 10
        )
        compact = re.sub(r"\s+", "", settings)  # the JSON viewer puts tokens on lines of their own
        assert '"frames":64,' in compact and '"seeds":[0]' in compact, compact
        shot = browser.screenshot(tmp_path / "serve.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_the_output_folder_is_served(server, client, model) -> None:
    _, files, _ = client.predict(steps=2, api_name="/sample")
    written = sorted(server.out.rglob("sample-0.mp4"))[-1]
    assert written.read_bytes() == Path(files[0]).read_bytes()

    def status(path: Path) -> int:
        try:
            with urllib.request.urlopen(f"{server.url}/gradio_api/file={path}", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert status(written) == 200
    for path in (
        model / "config.yaml",
        model / "pipeline.json",
        Path(__file__),
        Path("/etc/passwd"),
    ):
        assert status(path) in (403, 404), path


def test_only_localhost_is_bound_by_default(server) -> None:
    log = server.log.read_text()
    assert f"on http://127.0.0.1:{server.port}" in log and "gradio.live" not in log


def test_a_port_in_use_is_one_clear_error(server, model) -> None:
    proc = run_pvdm("serve", "--model", str(model), "--port", str(server.port), check=False)
    assert proc.returncode == 2 and f"cannot serve on 127.0.0.1:{server.port}" in proc.stderr
    assert "Traceback" not in proc.stderr and server.alive()


def test_help() -> None:
    out = run_pvdm("serve", "--help").stdout
    for flag in ("--model", "--host", "--port", "--share", "--device"):
        assert flag in out
    assert "127.0.0.1" in out


def test_missing_or_wrong_model_is_one_clear_error(model, tmp_path) -> None:
    proc = run_pvdm("serve", "--model", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and "nope does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_pvdm("serve", "--model", str(tmp_path / "empty"), check=False)
    assert proc.returncode == 2 and "is not a pvdm pipeline" in proc.stderr
    assert "Traceback" not in proc.stderr
    if not torch.cuda.is_available():
        proc = run_pvdm("serve", "--model", str(model), "--device", "cuda", check=False)
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr


def test_a_bad_device_or_out_is_one_clear_error(model, tmp_path) -> None:
    """Both refused before the model is loaded; a folder serve did not make is left alone."""
    proc = run_pvdm("serve", "--model", str(model), "--device", "tpu", check=False)
    assert proc.returncode == 2 and "tpu" in proc.stderr and "Traceback" not in proc.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "job-old").mkdir()
    proc = run_pvdm("serve", "--model", str(model), "--out", str(mine), check=False)
    assert proc.returncode == 2 and "pvdm serve did not write" in proc.stderr
    assert "Traceback" not in proc.stderr and sorted(p.name for p in mine.iterdir()) == ["job-old"]
