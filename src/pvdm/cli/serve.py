"""`pvdm serve`: a browser page to sample, extend and continue videos with a model (Gradio)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page (Gradio) to generate and continue videos with a model",
        description=(
            "Load a model once and serve one page with Generate, Continue and Model tabs, and "
            "the API endpoints /sample and /continue. Needs the app extra: "
            'pip install -e ".[app]".'
        ),
    )
    p.add_argument(
        "--model",
        required=True,
        help="diffusion run folder, pipeline folder or converted checkpoint",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda:N")
    p.add_argument(
        "--share", action="store_true", help="also open a public Gradio share link (off by default)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="folder for generated videos: a new or empty one, or one pvdm serve made before "
        "(default: a new temporary folder)",
    )
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written mp4 files")
    p.add_argument("--max-upload-mb", type=int, default=200, help="largest upload accepted")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import importlib.util
    import tempfile

    from pvdm.errors import PvdmError

    model = Path(args.model)
    if not model.exists():
        raise PvdmError(
            f"--model {model} does not exist; give a diffusion run folder, a pipeline folder, "
            "or a folder from `pvdm convert official`"
        )
    if importlib.util.find_spec("gradio") is None:  # checked before the slow model load
        raise PvdmError('pvdm serve needs Gradio; install the app extra: pip install -e ".[app]"')
    _check_port(args.host, args.port)
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.runtime import resolve_device
    from pvdm.serve.studio import Studio, prepare_out_dir

    device = resolve_device(args.device)  # an unknown or absent device is one ConfigError
    out = prepare_out_dir(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pvdm-serve-"))
    pipe = PVDMPipeline.from_pretrained(model, device=device)

    from pvdm.serve.app import build_app, launch

    studio = Studio(pipe, out, fps=args.fps)
    demo = build_app(studio, model)
    url = f"http://{args.host}:{args.port}"
    try:
        launch(
            demo, studio, host=args.host, port=args.port, share=args.share,
            max_upload_mb=args.max_upload_mb, on_ready=lambda: print(
                f"serving {model} on {url} (device {pipe.device}; videos in {out}); Ctrl-C stops",
                flush=True,
            ),
        )  # fmt: skip
    except OSError as e:
        raise PvdmError(
            f"cannot serve on {args.host}:{args.port} ({e}); choose another --port"
        ) from None
    return 0


def _check_port(host: str, port: int) -> None:
    """Fail before loading the model when the address is taken (the server binds it again)."""
    import socket

    from pvdm.errors import PvdmError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError as e:
            raise PvdmError(
                f"cannot serve on {host}:{port} ({e.strerror}); choose another --port"
            ) from None
