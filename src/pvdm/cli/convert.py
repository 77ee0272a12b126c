"""`pvdm convert official`: turn released official PVDM `.pth` files into pvdm checkpoints.

    pvdm convert official --autoencoder AE.pth [--ae-config base.yaml] \
        [--unet EMA.pth [--unet-config base.yaml]] --out DIR

writes DIR/autoencoder/ and DIR/unet/ (config.json + model.safetensors each) and, when both are
there, DIR/pipeline.json, so `pvdm sample --model DIR` works. Without a config
file the official defaults are used (configs/autoencoder/base.yaml,
configs/latent-diffusion/base.yaml). The `.pth` files are read with `weights_only=True`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pvdm convert` and its `official` subcommand."""
    parser = subparsers.add_parser(
        "convert", help="convert checkpoints to the pvdm format", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="convert_command", metavar="SOURCE", required=True)
    official = sub.add_parser(
        "official",
        help="official PVDM .pth checkpoints (github.com/sihyun-yu/PVDM)",
        description="Convert official PVDM checkpoints (autoencoder and/or diffusion UNet) to "
        "pvdm model directories.",
    )
    official.add_argument(
        "--autoencoder", type=Path, help="official autoencoder .pth (model_last.pth)"
    )
    official.add_argument(
        "--ae-config",
        type=Path,
        help="official autoencoder YAML (configs/autoencoder/base.yaml); default: its values",
    )
    official.add_argument("--unet", type=Path, help="official diffusion .pth (ema_model_*.pth)")
    official.add_argument(
        "--unet-config",
        type=Path,
        help="official diffusion YAML (configs/latent-diffusion/base.yaml); default: its values",
    )
    official.add_argument("--out", type=Path, required=True, help="output folder")
    official.set_defaults(func=run_official)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    from pvdm.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping")
    return data


def _params(data: dict[str, Any]) -> dict[str, Any]:
    """The `model.params` block of an official YAML, or the mapping itself."""
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("params"), dict):
        return model["params"]
    return data


def ae_config_from_yaml(path: Path) -> tuple[dict[str, Any], int]:
    """(ddconfig, embed_dim) from an official autoencoder YAML."""
    from pvdm.errors import ConfigError

    params = _params(_read_yaml(path))
    ddconfig = params.get("ddconfig", params)
    if not isinstance(ddconfig, dict) or "resolution" not in ddconfig:
        raise ConfigError(f"{path} has no model.params.ddconfig block with a resolution")
    return ddconfig, int(params.get("embed_dim", 4))


def unet_config_from_yaml(path: Path) -> dict[str, Any]:
    """The unet_config block of an official diffusion YAML."""
    from pvdm.errors import ConfigError

    params = _params(_read_yaml(path))
    unet_config = params.get("unet_config", params)
    if not isinstance(unet_config, dict) or "model_channels" not in unet_config:
        raise ConfigError(f"{path} has no model.params.unet_config block with model_channels")
    return unet_config


def run_official(args: argparse.Namespace) -> int:
    """Convert the given official checkpoints and save them under --out."""
    from pvdm import convert
    from pvdm.errors import ConfigError

    if args.autoencoder is None and args.unet is None:
        raise ConfigError("nothing to convert: pass --autoencoder AE.pth and/or --unet EMA.pth")
    if args.autoencoder is not None:
        if args.ae_config is not None:
            ddconfig, embed_dim = ae_config_from_yaml(args.ae_config)
        else:
            ddconfig, embed_dim = convert.OFFICIAL_DDCONFIG, convert.OFFICIAL_EMBED_DIM
        state = convert.load_official_pth(args.autoencoder)
        model = convert.official_autoencoder(state, ddconfig, embed_dim)
        out = model.save_pretrained(
            args.out / "autoencoder", metadata={"converted_from": args.autoencoder.name}
        )
        print(f"autoencoder ({_count(model)} parameters) -> {out}")
    if args.unet is not None:
        if args.unet_config is not None:
            unet_config = unet_config_from_yaml(args.unet_config)
        else:
            unet_config = convert.OFFICIAL_UNET_CONFIG
        state = convert.load_official_pth(args.unet)
        model = convert.official_unet(state, unet_config)
        out = model.save_pretrained(args.out / "unet", metadata={"converted_from": args.unet.name})
        print(f"unet ({_count(model)} parameters) -> {out}")
    if (args.out / "unet").is_dir() and (args.out / "autoencoder").is_dir():
        from pvdm.diffusion.pipeline import write_pipeline_file

        # the official schedule is the pvdm default; no classes (the official models are unconditional)
        write_pipeline_file(args.out, "unet", "autoencoder")
        print(f"pipeline -> {args.out} (use: pvdm sample --model {args.out} ...)")
    return 0


def _count(model) -> str:
    return f"{sum(p.numel() for p in model.parameters()):,}"
