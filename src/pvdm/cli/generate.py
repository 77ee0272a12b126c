"""`pvdm sample`, `pvdm continue`, `pvdm reconstruct`: using trained (or converted) models."""

from __future__ import annotations

import argparse
from pathlib import Path


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from pvdm.cli.common import add_sampling_args

    p.add_argument("--model", required=True, help="diffusion run folder or pipeline folder")
    add_sampling_args(p, seed_help="sample i uses seed + i (default 0)")
    p.add_argument("--guidance", type=float, default=0.0, help="official frame guidance w")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("mp4", "gif", "png", "mkv"),
        default="mp4",
        help="one file per video: mp4 (H.264, for viewing; lossy), gif, or lossless for "
        "evaluation: png (a folder of PNG frames per video) or mkv (FFV1)",
    )
    p.add_argument(
        "--latent-pass-through",
        action="store_true",
        help="condition each next clip on the sampled latent instead of re-encoding its frames",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate videos (any length) from a trained model")
    _add_sampling_args(p)
    p.add_argument("--num", type=int, default=8, help="number of videos")
    p.add_argument("--frames", type=int, help="frames per video (default: one clip); any length")
    p.add_argument("--class", dest="label", help="class name or index (class-conditional models)")
    p.add_argument(
        "--class-guidance", type=float, default=0.0, help="classifier-free guidance scale"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_sample)

    p = sub.add_parser("continue", help="continue a video: generate what follows its last clip")
    p.add_argument("video", type=Path, help="a video file or frame folder")
    _add_sampling_args(p)
    p.add_argument("--frames", type=int, required=True, help="frames to generate")
    p.add_argument("--num", type=int, default=1, help="continuations to generate")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_continue)

    p = sub.add_parser(
        "reconstruct",
        help="encode and decode videos with an autoencoder; write them side by side, print PSNR/SSIM",
    )
    p.add_argument("--autoencoder", required=True, help="run folder, snapshot or checkpoint")
    p.add_argument("--input", required=True, help="a video file, a dataset folder, or 'synthetic'")
    p.add_argument("--out", type=Path, required=True, help="output .mp4, .gif or .png")
    p.add_argument("--num", type=int, default=8, help="clips to take from a dataset")
    p.add_argument(
        "--split", default="test", help="dataset split (test falls back to train, with a warning)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--fps", type=float, default=8.0)
    p.set_defaults(func=_reconstruct)


def _check_fps(fps: float) -> None:
    import math

    from pvdm.errors import ConfigError

    if not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"--fps must be positive, got {fps}")


def _request(args: argparse.Namespace, **fields):
    """The generation request of `pvdm sample` / `pvdm continue`, checked before any work."""
    from pvdm.cli.common import sampling_request

    _check_fps(args.fps)
    return sampling_request(
        args,
        num=args.num,
        frames=args.frames,
        guidance=args.guidance,
        reencode=not args.latent_pass_through,
        batch_size=args.batch_size,
        **fields,
    )


def _pipeline(args: argparse.Namespace):
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.runtime import resolve_device

    return PVDMPipeline.from_pretrained(args.model, device=resolve_device(args.device))


def _sample(args: argparse.Namespace) -> int:
    from pvdm.diffusion.sample_folder import prepare_output_folder, write_samples
    from pvdm.runs import run_lock

    labels = [args.label] if args.label is not None else None
    request = _request(args, labels=labels, class_guidance=args.class_guidance)
    pipe = _pipeline(args)
    request = pipe.resolve(request)
    with run_lock(prepare_output_folder(args.out), "--out"):  # one command per folder
        videos = pipe(request)
        settings = {"command": "sample", "model": str(args.model), **request.record()}
        write_samples(args.out, videos, settings, fps=args.fps, fmt=args.fmt)
    print(f"wrote {request.num} videos of {videos.shape[2]} frames to {args.out}")
    return 0


def _continue(args: argparse.Namespace) -> int:
    import torch

    from pvdm.diffusion.sample_folder import prepare_output_folder, write_samples
    from pvdm.errors import DataError
    from pvdm.runs import run_lock

    request = _request(args)
    pipe = _pipeline(args)
    request = pipe.resolve(request)
    res, clip = pipe.autoencoder.config.resolution, pipe.clip_frames
    video = load_video_for_model(args.video, res)
    if video.shape[1] < clip:
        raise DataError(
            f"{args.video} has {video.shape[1]} frames; continuing needs at least {clip}"
        )
    with run_lock(prepare_output_folder(args.out), "--out"):  # one command per folder
        generated = pipe(request, context=video[None])
        given = video[None].expand(request.num, *video.shape)
        full = torch.cat([given, generated], dim=2)
        settings = {
            "command": "continue",
            "model": str(args.model),
            "video": str(args.video),
            "given_frames": video.shape[1],
            **request.record(),
        }
        write_samples(args.out, full, settings, fps=args.fps, fmt=args.fmt)
    print(
        f"wrote {request.num} continuation(s) to {args.out}: {video.shape[1]} given frames + "
        f"{generated.shape[2]} generated"
    )
    return 0


def load_video_for_model(path: Path, resolution: int):
    """A user's video as uint8 [C, T, H, W], centre-cropped and resized like training data."""
    from pvdm.data import read_video

    # each frame is cropped and resized as it decodes: memory follows the model's resolution
    return read_video(path, resolution=resolution)


def _reconstruct(args: argparse.Namespace) -> int:
    import torch

    from pvdm.data import DataConfig, from_model_range, split_clips, write_video
    from pvdm.errors import DataError, PvdmError
    from pvdm.metrics.recon import psnr_uint8, reconstruct, ssim_uint8
    from pvdm.models import load_model
    from pvdm.runtime import resolve_device

    if args.out.suffix.lower() not in (".mp4", ".gif", ".png"):
        raise PvdmError(f"--out {args.out} must end in .mp4, .gif or .png")
    if args.out.is_dir():
        raise PvdmError(f"--out {args.out} is a folder; give a file name ending in .mp4/.gif/.png")
    _check_fps(args.fps)
    if args.num < 1 or args.seed < 0:
        raise PvdmError(
            f"--num must be at least 1 and --seed 0 or more, got {args.num}, {args.seed}"
        )
    device = resolve_device(args.device)
    ae = load_model(args.autoencoder, expect="autoencoder").to(device).eval()
    res, frames = ae.config.resolution, ae.config.frames
    source = Path(args.input)
    if source.is_file():
        video = load_video_for_model(source, res)
        n = video.shape[1] // frames
        if n < 1:
            raise DataError(f"{source} has {video.shape[1]} frames; the autoencoder needs {frames}")
        clips = torch.stack([video[:, i * frames : (i + 1) * frames] for i in range(n)])
    else:
        cfg = DataConfig(path=args.input, resolution=res, frames=frames)
        clips, _ = split_clips(cfg, args.split, args.num, args.seed, purpose="pvdm reconstruct")
    recon = from_model_range(reconstruct(ae, clips, batch_size=4)).cpu()
    p, s = psnr_uint8(clips, recon).item(), ssim_uint8(clips, recon).item()
    if source.is_file():  # one long video: clips back to back
        side = torch.cat([clips, recon], dim=-1)  # [n, C, T, H, 2W]
        side = torch.cat(list(side), dim=1)[None]  # [1, C, n*T, H, 2W]
    else:
        side = torch.cat([clips, recon], dim=-1)
    write_video(args.out, side, fps=args.fps)
    print(
        f"{len(clips)} clips: PSNR {p:.2f} dB, SSIM {s:.4f} (original left, reconstruction right)"
    )
    print(f"wrote {args.out}")
    return 0
