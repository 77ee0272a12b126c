"""The Gradio page of `pvdm serve`: Generate, Continue and Model tabs, and the API.

The two actions are named endpoints, `/sample` and `/continue`; every input has a default, so
`Client(url).predict(api_name="/sample")` and `predict(handle_file(video), api_name="/continue")`
work as they are; `/cancel` stops the running job. Jobs share one queue slot (`concurrency_id="model"`): one runs at a time, the
rest wait their turn. Errors a user can cause come back as a message, the server keeps going.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvdm.diffusion.sampling import SamplingConfig
from pvdm.errors import PvdmError
from pvdm.serve.model_card import model_card
from pvdm.serve.studio import NO_CLASS, Cancelled, Studio

log = logging.getLogger(__name__)

DEFAULTS = SamplingConfig()
UPLOAD_TYPES = [".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov", ".gif", ".mpg", ".mpeg"]
UPLOAD_TYPES += [".wmv", ".flv", ".ogv", ".3gp", ".ts"]


def import_gradio() -> Any:
    """Gradio, or a clear error saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise PvdmError(
            'pvdm serve needs Gradio; install the app extra: pip install -e ".[app]"'
        ) from None
    return gr


def whole(value: Any, what: str) -> int:
    """A page number as an int; a fraction or a non-number is one clear error."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact, however large (a float would round a 64-bit seed)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PvdmError(f"{what} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise PvdmError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def owner_of(request: Any) -> str | None:
    """The client a job belongs to: Gradio's session of the page or API client."""
    return getattr(request, "session_hash", None) or None


def build_app(studio: Studio, model_dir: str | Path) -> Any:
    """The page (a `gradio.Blocks`) for one studio."""
    gr = import_gradio()
    from pvdm.diffusion.samplers import SAMPLERS

    classes = studio.classes
    clip = studio.clip_frames
    default_sampler = studio.pipe.default_sampler
    default_steps = studio.default_steps(default_sampler)
    sampler_choices = [(f"{spec.title} ({name})", name) for name, spec in SAMPLERS.items()]
    lim = studio.limits
    card = model_card(studio.pipe, model_dir)

    def on_error(e: Exception) -> Exception:
        """The message the page shows; a user's mistake is one log line, not a traceback."""
        if isinstance(e, Cancelled):
            log.info("job cancelled")
            return gr.Error("Cancelled.", title="Cancelled", print_exception=False)
        if isinstance(e, PvdmError | ValueError):
            log.info("request refused: %s", e)
            return gr.Error(str(e), print_exception=False)
        log.exception("job failed")
        return gr.Error(f"the job failed ({type(e).__name__}: {e}); see the server log")

    def progress_of(progress: Any):
        return lambda fraction, desc: progress(fraction, desc=desc)

    def request_of(sampler: str, steps: float, eta: float, seed: float, guidance: float, **rest):
        """The page's values as a SamplingConfig (checked by the studio)."""
        if sampler not in SAMPLERS:
            raise PvdmError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        fixed = SAMPLERS[sampler].default_steps is None  # the slider's number does not apply
        return SamplingConfig(
            sampler=sampler, steps=None if fixed else whole(steps, "steps"), eta=float(eta),
            seed=whole(seed, "seed"), guidance=float(guidance), **rest,
        )  # fmt: skip

    def run_sample(
        num: float = 1,
        frames: float = clip,
        sampler: str = default_sampler,
        steps: float = default_steps,
        eta: float = DEFAULTS.eta,
        seed: float = 0,
        label: str = NO_CLASS,
        class_guidance: float = 0.0,
        guidance: float = 0.0,
        request: gr.Request = None,
        progress: Any = gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress bar)
    ):
        """Generate videos; returns (gallery, mp4 files, settings with seeds and seconds)."""
        try:
            result = studio.sample(
                request_of(
                    sampler, steps, eta, seed, guidance, num=whole(num, "videos"),
                    frames=whole(frames, "frames"), labels=label or None,
                    class_guidance=float(class_guidance) if label not in (None, NO_CLASS) else 0.0,
                ),
                progress=progress_of(progress), owner=owner_of(request),
            )  # fmt: skip
        except Exception as e:
            raise on_error(e) from None
        seeds = result.info["seeds"]
        gallery = [(str(p), f"seed {s}") for p, s in zip(result.videos, seeds)]
        return gallery, [str(p) for p in result.videos], result.info

    def run_continue(
        video: str | None,
        frames: float = 2 * clip,
        sampler: str = default_sampler,
        steps: float = default_steps,
        eta: float = DEFAULTS.eta,
        seed: float = 0,
        guidance: float = 0.0,
        request: gr.Request = None,
        progress: Any = gr.Progress(),  # noqa: B008
    ):
        """Continue an uploaded video; returns (given video, given + continuation, settings)."""
        if not video:
            raise gr.Error("upload a video first")
        try:
            result = studio.continue_video(
                video,
                request_of(sampler, steps, eta, seed, guidance, frames=whole(frames, "frames")),
                progress=progress_of(progress), owner=owner_of(request),
            )  # fmt: skip
        except Exception as e:
            raise on_error(e) from None
        given, full = result.videos
        return str(given), str(full), result.info

    def sampler_changed(sampler: str):
        spec = SAMPLERS[sampler]
        return (
            gr.update(
                value=studio.default_steps(sampler), interactive=spec.default_steps is not None
            ),
            gr.update(visible=spec.uses_eta),
        )

    def sampling_controls():
        with gr.Row():
            sampler = gr.Dropdown(sampler_choices, value=default_sampler, label="sampler")
            steps = gr.Slider(
                1, studio.pipe.schedule.num_timesteps, value=default_steps, step=1, label="steps",
                info="DDPM always takes every step of the schedule",
            )  # fmt: skip
            eta = gr.Slider(
                0.0, 1.0, value=DEFAULTS.eta, step=0.05, label="eta",
                visible=SAMPLERS[default_sampler].uses_eta,
                info="noise of the stochastic samplers; DDIM: 1 ancestral (official), 0 deterministic",
            )  # fmt: skip
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label="seed", info="video i uses seed + i")
            guidance = gr.Slider(
                0.0, 4.0, value=0.0, step=0.1, label="frame guidance w",
                info="official (1 + w) eps(x, c) - w eps(x, 0), on clips that continue another",
            )  # fmt: skip
        sampler.change(
            sampler_changed, sampler, [steps, eta], api_visibility="private", queue=False
        )
        return sampler, steps, eta, seed, guidance

    # uploads and Gradio's copies of the outputs older than a day go, checked every hour
    with gr.Blocks(title="pvdm serve", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(
            f"## pvdm · {Path(model_dir).name}\n"
            f"Clips of {clip} frames at {studio.resolution}x{studio.resolution}; longer videos "
            "are made clip by clip, each conditioned on the one before. One job runs at a time."
        )
        with gr.Tab("Generate"):
            with gr.Row():
                num = gr.Slider(1, lim.max_videos, value=1, step=1, label="videos")
                frames = gr.Slider(
                    1, lim.max_frames, value=clip, step=1, label="frames per video", elem_id="frames",
                    info=f"{clip} = one clip; more makes a long video",
                )  # fmt: skip
            with gr.Row(visible=classes is not None):
                label = gr.Dropdown([NO_CLASS, *(classes or [])], value=NO_CLASS, label="class")
                class_guidance = gr.Slider(
                    0.0, 10.0, value=0.0, step=0.5, label="class guidance (classifier-free)"
                )
            sampler, steps, eta, seed, guidance = sampling_controls()
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            gallery = gr.Gallery(label="videos", columns=4, height="auto", object_fit="contain")
            files = gr.File(label="downloads (mp4)", file_count="multiple")
            info = gr.JSON(label="settings, seeds and time")
            sample_event = generate.click(
                run_sample,
                [num, frames, sampler, steps, eta, seed, label, class_guidance, guidance],
                [gallery, files, info],
                api_name="sample",
                show_progress_on=gallery,
                concurrency_id="model",
                concurrency_limit=1,
            )
        with gr.Tab("Continue"):
            upload = gr.File(label="your video", file_types=UPLOAD_TYPES, type="filepath")
            add = gr.Slider(
                1, lim.max_frames, value=2 * clip, step=1, label="frames to add",
                info=f"the last {clip} frames of your video condition the first new clip",
            )  # fmt: skip
            c_sampler, c_steps, c_eta, c_seed, c_guidance = sampling_controls()
            with gr.Row():
                go = gr.Button("Continue", variant="primary", elem_id="continue")
                c_cancel = gr.Button("Cancel", variant="stop", elem_id="continue-cancel")
            with gr.Row():
                given = gr.Video(label="given (at the model's resolution)", loop=True)
                continued = gr.Video(label="given + continuation", loop=True)
            c_info = gr.JSON(label="settings, seeds and time")
            continue_event = go.click(
                run_continue,
                [upload, add, c_sampler, c_steps, c_eta, c_seed, c_guidance],
                [given, continued, c_info],
                api_name="continue",
                show_progress_on=continued,
                concurrency_id="model",
                concurrency_limit=1,
            )
        with gr.Tab("Model"):
            card_md = gr.Markdown(card)
            refresh = gr.Button("Reload results")
            refresh.click(
                lambda: model_card(studio.pipe, model_dir), None, card_md, api_visibility="private"
            )

        def cancel_job(request: gr.Request = None) -> None:
            """Stop this client's running job at its next denoising step."""
            studio.cancel(owner_of(request))

        # Gradio passes the client's request to a parameter annotated gr.Request; it reads the
        # annotations with typing.get_type_hints, which cannot see this function's local `gr`
        for fn in (run_sample, run_continue, cancel_job):
            fn.__annotations__["request"] = gr.Request
        for button, api in ((cancel, "public"), (c_cancel, "private")):
            # Gradio's own cancel frees the queue slot but cannot stop a function running in a
            # thread; the studio's flag stops the job itself. Also the API's /cancel.
            button.click(
                cancel_job, None, None, cancels=[sample_event, continue_event], queue=False,
                api_name="cancel" if api == "public" else None, api_visibility=api,
            )  # fmt: skip
        for block in demo.blocks.values():
            if isinstance(block, gr.Slider | gr.Number):
                quiet_bounds(gr, block)
    return demo


def quiet_bounds(gr: Any, component: Any) -> None:
    """An out-of-range value of `component` (from the API: the page's sliders keep to their
    range) is refused with its message and one log line, without a traceback in the log."""
    check = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return check(payload)
        except gr.Error as e:
            log.info("request refused: %s", e.message)
            raise gr.Error(e.message, print_exception=False) from None

    component.preprocess = preprocess


def launch(
    demo: Any,
    studio: Studio,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_upload_mb: int = 200,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the page until Ctrl-C: one queue slot, only the studio's output folder served."""
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(studio.out_dir)],
        max_file_size=f"{max_upload_mb}mb",
        ssr_mode=False,
        show_error=True,
        quiet=True,
        prevent_thread_lock=True,
        footer_links=["api"],
    )
    if on_ready is not None:
        on_ready()
    demo.block_thread()
