"""Loading official PVDM checkpoints (github.com/sihyun-yu/PVDM, commit 793172f).

    ae = official_autoencoder(state_dict, ddconfig, embed_dim)   # official ViTAutoencoder keys
    unet = official_unet(state_dict, unet_config)                # official DiffusionWrapper keys
    flat = z.pack(); z = TriplaneLatent.unpack(flat, shape)      # official flat latents

`ddconfig` / `unet_config` are the official YAML blocks as dicts; fields the official code
ignores are ignored here too. Parameter names are translated by `autoencoder_key_to_official`
and `unet_key_to_official` (ours -> official; the inverse is the same table read backwards), and
the 1x1 convolutions of the official code become Linear weights (trailing 1-dims dropped).
Buffers that carry no information are accepted and dropped: the AE's `coords` and the UNet's
`zeros`. The AE's rotary `inv_freqs` / `scales` buffers are loaded (see `models/rotary.py`). Everything else is
strict: a missing, extra or mis-shaped key is one `CheckpointError` naming the official keys.
`.pth` files are read with `torch.load(weights_only=True)`, which refuses pickles that run code.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pvdm.errors import CheckpointError, ConfigError
from pvdm.models.autoencoder import AutoencoderConfig, TriplaneAutoencoder
from pvdm.models.pretrained import check_state_dict, load_state_dict_strict
from pvdm.models.unet import TriplaneUNet, UNetConfig, block_plan

OFFICIAL_PLANE = {"hw": "xy", "tw": "yt", "th": "xt"}  # official names keep (x=w, y=h, t)
UNET_PREFIX = "diffusion_model."
AE_IGNORED = re.compile(r"coords")
UNET_IGNORED = re.compile(r"zeros")

# official `configs/autoencoder/base.yaml` and `configs/latent-diffusion/base.yaml`
OFFICIAL_DDCONFIG: dict[str, Any] = {
    "double_z": False,
    "channels": 384,
    "resolution": 256,
    "timesteps": 16,
    "skip": 1,
    "in_channels": 3,
    "out_ch": 3,
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "splits": 1,
}
OFFICIAL_EMBED_DIM = 4
OFFICIAL_UNET_CONFIG: dict[str, Any] = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 256,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_heads": 8,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "cond_model": True,
}

# ---- key names -----------------------------------------------------------------------------

_TIMESFORMER_SLOTS = {
    "time_norm": "0.norm",
    "time_attn": "0.fn",
    "space_norm": "1.norm",
    "space_attn": "1.fn",
    "ff_norm": "2.norm",
    "ff": "2.fn",
}
_PROJECTION_SLOTS = {"attn_norm": "0.norm", "attn": "0.fn", "ff_norm": "1.norm", "ff": "1.fn"}
_INNER = {"qkv": "to_qkv", "out": "to_out.0", "fc1": "net.0", "fc2": "net.3"}
_RESBLOCK = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "skip": "skip_connection",
}
_ATTENTION = {"norm": "norm", "qkv": "qkv", "proj": "proj_out"}


def _inner(rest: str) -> str:
    layer, _, leaf = rest.rpartition(".")
    return f"{_INNER.get(layer, layer)}.{leaf}" if layer else leaf


def autoencoder_key_to_official(key: str) -> tuple[str, int]:
    """Our autoencoder parameter name -> (official name, trailing 1-dims the official tensor has)."""
    if m := re.fullmatch(r"patch_embed\.(weight|bias)", key):
        return f"encoder.to_patch_embedding.{m[1]}", 0
    if m := re.fullmatch(r"(encoder|decoder)\.rotary_(inv_freqs|scales)", key):
        rotary = "frame_rot_emb.inv_freqs" if m[2] == "inv_freqs" else "image_rot_emb.scales"
        return f"{m[1]}.{rotary}", 0
    if m := re.fullmatch(r"(encoder|decoder)\.blocks\.(\d+)\.(\w+)\.(.+)", key):
        return f"{m[1]}.layers.{m[2]}.{_TIMESFORMER_SLOTS[m[3]]}.{_inner(m[4])}", 0
    if m := re.fullmatch(r"pool\.(\w\w)\.(token|pos_embedding)", key):
        return f"{OFFICIAL_PLANE[m[1]]}_{m[2]}", 0
    if m := re.fullmatch(r"pool\.(\w\w)\.blocks\.(\d+)\.(\w+)\.(.+)", key):
        slot = _PROJECTION_SLOTS[m[3]]
        return f"{OFFICIAL_PLANE[m[1]]}_quant_attn.layers.{m[2]}.{slot}.{_inner(m[4])}", 0
    if m := re.fullmatch(r"(to|from)_latent\.(\w\w)\.(weight|bias)", key):
        conv = "pre" if m[1] == "to" else "post"  # 1x1 Conv2d in the official code
        return f"{conv}_{OFFICIAL_PLANE[m[2]]}.{m[3]}", 2 if m[3] == "weight" else 0
    if m := re.fullmatch(r"pixel_head\.(weight|bias)", key):
        return f"to_pixel.1.{m[1]}", 0
    raise KeyError(f"no official name for autoencoder parameter {key}")


def _unet_sub(kind: str, rest: str) -> tuple[str, int]:
    layer, _, leaf = rest.partition(".")
    if kind == "res":
        return f"{_RESBLOCK[layer]}.{leaf}", 0
    # attention: the official qkv / proj_out are Conv1d(k=1)
    return f"{_ATTENTION[layer]}.{leaf}", 1 if layer != "norm" and leaf == "weight" else 0


def unet_key_to_official(key: str, config: UNetConfig) -> tuple[str, int]:
    """Our UNet parameter name -> (official `UNetModel` name, trailing 1-dims of its tensor)."""
    if m := re.fullmatch(r"time_embed\.linear([12])\.(\w+)", key):
        return f"time_embed.{0 if m[1] == '1' else 2}.{m[2]}", 0
    if m := re.fullmatch(r"input_conv\.(\w+)", key):
        return f"input_blocks.0.0.{m[1]}", 0
    if m := re.fullmatch(r"(out_norm|out_conv)\.(\w+)", key):
        return f"out.{0 if m[1] == 'out_norm' else 2}.{m[2]}", 0
    if m := re.fullmatch(r"label_embed\.weight", key):
        return "label_emb.weight", 0
    m = re.fullmatch(r"(down_blocks|up_blocks)\.(\d+)\.(\w+)\.(.+)|mid_block\.(\w+)\.(.+)", key)
    if m is None:
        raise KeyError(f"no official name for UNet parameter {key}")
    if m[5]:  # middle block
        slot, rest = m[5], m[6]
        prefix = {"res": "middle_block.0", "attn": "middle_block.1", "res2": "middle_block.2"}
        name = prefix.get(slot, "mid_attn")
    else:
        i, slot, rest = int(m[2]), m[3], m[4]
        if m[1] == "down_blocks":  # official input block 0 is the input conv
            blocks, joint, i = "input_blocks", "input_attns", i + 1
            position = {"res": 0, "attn": 1}
        else:
            blocks, joint = "output_blocks", "output_attns"
            has_attention = block_plan(config)[2][i].attention
            position = {"res": 0, "attn": 1, "res2": 2 if has_attention else 1}
        name = f"{joint}.{i}" if slot == "joint_attn" else f"{blocks}.{i}.{position[slot]}"
    sub, extra = _unet_sub("res" if slot.startswith("res") else "attn", rest)
    return f"{name}.{sub}", extra


# ---- state dicts ---------------------------------------------------------------------------


def _from_official(
    model: torch.nn.Module,
    state: Mapping[str, Tensor],
    to_official,
    ignored: re.Pattern,
    prefix: str,
    source: str,
) -> dict[str, Tensor]:
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    names = {k: to_official(k) for k in shapes}
    given = {k: v for k, v in state.items() if not ignored.fullmatch(k.removeprefix(prefix))}
    expected = {
        prefix + official: shapes[k] + (1,) * extra for k, (official, extra) in names.items()
    }
    check_state_dict(expected, {k: tuple(v.shape) for k, v in given.items()}, source)
    return {
        k: given[prefix + official].reshape(shapes[k]).float() for k, (official, _) in names.items()
    }


def _to_official(state: Mapping[str, Tensor], to_official, prefix: str) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        official, extra = to_official(k)
        out[prefix + official] = v.reshape(*v.shape, *(1,) * extra)
    return out


def autoencoder_state_to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our autoencoder state dict -> official `ViTAutoencoder` names and shapes (no buffers)."""
    return _to_official(state, autoencoder_key_to_official, "")


def unet_state_to_official(state: Mapping[str, Tensor], config: UNetConfig) -> dict[str, Tensor]:
    """Our UNet state dict -> official `DiffusionWrapper` names and shapes (no `zeros`)."""
    return _to_official(state, lambda k: unet_key_to_official(k, config), UNET_PREFIX)


# ---- configs -------------------------------------------------------------------------------


def autoencoder_config_from_official(
    ddconfig: Mapping[str, Any], embed_dim: int, patch_size: int | None = None
) -> AutoencoderConfig:
    """Our config for an official `ViTAutoencoder(embed_dim, ddconfig)`.

    The official patch size is 8, or 4 at resolution 128; pass `patch_size` to override it (the
    converter reads it from the patch-embedding weight).
    """
    try:
        resolution, frames, width = (
            int(ddconfig["resolution"]),
            int(ddconfig["timesteps"]),
            int(ddconfig["channels"]),
        )
    except KeyError as e:
        raise ConfigError(f"the official ddconfig lacks the field {e}") from None
    if int(ddconfig.get("splits", 1)) != 1:
        raise ConfigError(
            f"official ddconfig splits={ddconfig['splits']} is not supported (only 1)"
        )
    if patch_size is None:
        patch_size = 4 if resolution == 128 else 8
    return AutoencoderConfig(
        resolution=resolution,
        frames=frames,
        patch_size=patch_size,
        width=width,
        latent_channels=int(embed_dim),
        projection_head_dim=width // 8,
    )


def unet_config_from_official(unet_config: Mapping[str, Any]) -> UNetConfig:
    """Our config for an official `UNetModel(**unet_config)` (the fields PVDM uses)."""
    u = dict(unet_config)
    unsupported = {
        "use_scale_shift_norm": (True, False),
        "resblock_updown": (True, False),
        "use_new_attention_order": (False, False),
        "use_spatial_transformer": (False, False),
        "dims": (2, 2),
        "use_fp16": (False, False),
        "num_classes": (None, None),
        "n_embed": (None, None),
    }
    for name, (needed, default) in unsupported.items():
        if u.get(name, default) != needed:
            raise ConfigError(
                f"official unet_config {name}={u.get(name, default)!r} is not supported (needs {needed!r})"
            )
    if u.get("in_channels", 4) != u.get("out_channels", 4):
        raise ConfigError("official unet_config needs in_channels == out_channels")
    heads, head_channels = int(u.get("num_heads", -1)), int(u.get("num_head_channels", -1))
    if int(u.get("num_heads_upsample", -1)) not in (-1, heads):
        raise ConfigError("official unet_config num_heads_upsample != num_heads is not supported")
    return UNetConfig(
        latent_channels=int(u["in_channels"]),
        model_channels=int(u["model_channels"]),
        channel_mult=[int(m) for m in u.get("channel_mult", (1, 2, 4, 8))],
        num_res_blocks=int(u["num_res_blocks"]),
        attention_resolutions=sorted(int(a) for a in u["attention_resolutions"]),
        num_heads=heads if heads > 0 else 1,
        head_channels=head_channels if head_channels > 0 else None,
        dropout=float(u.get("dropout", 0.0)),
        frame_conditional=bool(u.get("cond_model", False)),
    )


# ---- public loading API --------------------------------------------------------------------


def official_autoencoder(
    state_dict: Mapping[str, Tensor], ddconfig: Mapping[str, Any], embed_dim: int
) -> TriplaneAutoencoder:
    """Our autoencoder (eval mode, float32) with the weights of an official `ViTAutoencoder`."""
    state_dict = _strip_module_prefix(state_dict)
    patch = state_dict.get("encoder.to_patch_embedding.weight")
    patch_size = round(math.sqrt(patch.shape[1] / 3)) if patch is not None else None
    config = autoencoder_config_from_official(ddconfig, embed_dim, patch_size)
    with torch.device("meta"):
        model = TriplaneAutoencoder(config)
    ours = _from_official(
        model,
        state_dict,
        autoencoder_key_to_official,
        AE_IGNORED,
        "",
        "official autoencoder state dict",
    )
    load_state_dict_strict(model, ours, "converted autoencoder state dict")
    return model.eval()


def official_unet(state_dict: Mapping[str, Tensor], unet_config: Mapping[str, Any]) -> TriplaneUNet:
    """Our UNet (eval mode, float32) with the weights of an official `DiffusionWrapper`."""
    state_dict = _strip_module_prefix(state_dict)
    config = unet_config_from_official(unet_config)
    with torch.device("meta"):
        model = TriplaneUNet(config)
    ours = _from_official(
        model,
        state_dict,
        lambda k: unet_key_to_official(k, config),
        UNET_IGNORED,
        UNET_PREFIX,
        "official UNet state dict",
    )
    load_state_dict_strict(model, ours, "converted UNet state dict")
    return model.eval()


def _strip_module_prefix(state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    # a state dict saved from a DistributedDataParallel wrapper
    if state and all(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_official_pth(path: str | Path) -> dict[str, Tensor]:
    """A state dict from an official `.pth` file, unpickled with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a plain weights file (refused to unpickle code: {first}); "
            "only load checkpoints from sources you trust"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint ({e})") from None
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(state)
