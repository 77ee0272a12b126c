"""Self-describing model checkpoints: safetensors weights plus the model config and a format version.

A model is saved either as a directory

    config.json         {"format": "pvdm", "format_version": 1, "model_type": ..., "config": {...}}
    model.safetensors   the weights, with the same JSON in its metadata under the key "pvdm"

or as a single `.safetensors` file (when the path ends in `.safetensors`), which is
self-describing through its metadata. Loading reads the header from the safetensors metadata;
a `config.json` that disagrees with it (e.g. a save interrupted between the two files) is an
error. Every file is written atomically. In the spirit of diffusers:
`Model.from_pretrained(path)`, `model.save_pretrained(path)`, and `load_model(path)` which
picks the class from `model_type` (each model class registers itself by defining it) and also
accepts a training run folder (its best or newest snapshot, `pvdm.runs.resolve_snapshot`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pvdm.atomic import atomic_path, atomic_write_text
from pvdm.config import config_from_dict, config_to_dict
from pvdm.errors import CheckpointError, ConfigError
from pvdm.jsonl import parse_json
from pvdm.runs import resolve_snapshot

FORMAT = "pvdm"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METADATA_KEY = "pvdm"

M = TypeVar("M", bound="PretrainedMixin")

# model_type -> class, filled by PretrainedMixin.__init_subclass__
MODEL_CLASSES: dict[str, type[PretrainedMixin]] = {}


def _weights_path(path: Path) -> Path:
    return path if path.suffix == ".safetensors" else path / WEIGHTS_NAME


def check_state_dict(
    expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Raise one `CheckpointError` naming every missing, unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshaped = [
        f"{k} {tuple(given[k])} (expected {tuple(expected[k])})"
        for k in expected
        if k in given and tuple(given[k]) != tuple(expected[k])
    ]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {what} key(s): {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model: {'; '.join(problems)}; "
            "check that the checkpoint and the model config belong together"
        )


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str):
    """Load `state_dict` into `model` (assigning, so meta-device models work), strictly.

    Floating-point tensors are cast to the model's dtype (an fp16 copy loads as fp32), and
    weights that are not finite (a diverged run's NaNs) are refused.
    """
    own = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in own.items()}
    check_state_dict(expected, {k: tuple(v.shape) for k, v in state_dict.items()}, source)
    state = {}
    for k, v in state_dict.items():
        if v.is_floating_point() and own[k].is_floating_point():
            if not v.is_meta and not bool(torch.isfinite(v).all()):
                raise CheckpointError(
                    f"{source} holds non-finite (NaN or inf) weights in {k}; the run it comes "
                    "from diverged: use an earlier snapshot or checkpoint"
                )
            v = v.to(own[k].dtype)
        elif v.dtype != own[k].dtype:
            # integer or bool values where the model has float weights (or the reverse): not
            # weights of this model, and casting them would hide that
            raise CheckpointError(
                f"{source} holds {k} as {str(v.dtype).removeprefix('torch.')} values, but the "
                f"model's {k} is {str(own[k].dtype).removeprefix('torch.')}; the file does not "
                "hold this model's weights"
            )
        state[k] = v
    model.load_state_dict(state, strict=True, assign=True)


def read_header(path: str | Path) -> dict[str, Any]:
    """The header {"format", "format_version", "model_type", "config", "metadata"?} of a checkpoint."""
    path = Path(path)
    weights = _weights_path(path)
    if not weights.is_file():
        raise CheckpointError(
            f"no model weights at {weights}: pass a pvdm model directory or a .safetensors file"
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from None
    if raw is None:
        raise CheckpointError(
            f"{weights} has no pvdm header in its metadata; it was not saved by pvdm "
            "(use `pvdm convert official` for official PVDM .pth files)"
        )
    try:
        header = parse_json(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{weights} has a pvdm header that is not JSON ({e}); save the model again"
        ) from None
    if (
        not isinstance(header, dict)
        or header.get("format") != FORMAT
        or not isinstance(header.get("format_version"), int)
    ):
        raise CheckpointError(f"{weights} has an invalid pvdm header: {raw[:200]}")
    if header["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{weights} uses checkpoint format version {header['format_version']}, newer than "
            f"this pvdm (version {FORMAT_VERSION}); upgrade pvdm"
        )
    if not isinstance(header.get("model_type"), str) or not isinstance(header.get("config"), dict):
        raise CheckpointError(
            f"{weights} has a pvdm header without a model type and config object, which "
            "rebuilding the model needs; save the model again"
        )
    config_file = path / CONFIG_NAME
    if weights != path and config_file.is_file():
        try:
            on_disk = parse_json(config_file.read_bytes())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"cannot parse {config_file}: {e}") from None
        if on_disk != header:
            raise CheckpointError(
                f"{config_file} disagrees with the header inside {weights} (an interrupted save?); "
                "save the model again"
            )
    return header


class PretrainedMixin:
    """`save_pretrained` / `from_pretrained` for an `nn.Module` with a dataclass `config`."""

    model_type: ClassVar[str]
    config_class: ClassVar[type]
    config: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model_type = cls.__dict__.get("model_type")
        if model_type is not None:
            if MODEL_CLASSES.get(model_type, cls) is not cls:
                raise TypeError(f"model_type {model_type!r} is already taken")
            MODEL_CLASSES[model_type] = cls

    def save_pretrained(
        self, path: str | Path, *, metadata: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the weights and config to a directory, or to one file if path ends in .safetensors.

        `metadata` (JSON-serialisable, e.g. {"step": 1000}) is stored in the header.
        """
        assert isinstance(self, nn.Module)
        path = Path(path)
        header: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "config": config_to_dict(self.config),
        }
        if metadata:
            header["metadata"] = dict(metadata)
        text = json.dumps(header, sort_keys=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        weights = _weights_path(path)
        with atomic_path(weights) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: text, "format": "pt"})
        if weights != path:
            atomic_write_text(path / CONFIG_NAME, json.dumps(header, indent=2, sort_keys=True))
        return path

    @classmethod
    def from_pretrained(
        cls: type[M],
        path: str | Path,
        *,
        device: torch.device | str = "cpu",
        config_overrides: Mapping[str, Any] | None = None,
    ) -> M:
        """Load a model saved by `save_pretrained` (eval mode), e.g. with {"attention": "math"}."""
        header = read_header(path)
        if header.get("model_type") != cls.model_type:
            raise CheckpointError(
                f"{path} holds a '{header.get('model_type')}' model, not a '{cls.model_type}'; "
                "use pvdm.models.load_model to load any model type"
            )
        try:
            config = config_from_dict(cls.config_class, header["config"], where="config")
            if config_overrides:
                config = dataclasses.replace(config, **config_overrides)
                config.validate()
        except (ConfigError, TypeError) as e:
            raise CheckpointError(f"{path}: invalid model config ({e})") from None
        with torch.device("meta"):
            model = cls(config)
        weights = _weights_path(Path(path))
        try:
            state = load_file(str(weights), device=str(device))
        except (SafetensorError, OSError) as e:  # e.g. cut short after a whole header
            raise CheckpointError(f"{weights} cannot be read ({e}); save the model again") from None
        load_state_dict_strict(model, state, str(path))
        return model.eval()


def load_model(
    path: str | Path, *, device: torch.device | str = "cpu", expect: str | None = None
) -> nn.Module:
    """Load any pvdm model checkpoint or run folder, choosing the class from its `model_type`.

    `expect` (e.g. "autoencoder") refuses any other model type with one sentence that names
    what was found and what to give.
    """
    given = path
    path = resolve_snapshot(path)
    model_type = read_header(path).get("model_type")
    if expect is not None and model_type != expect:
        hint = ""
        if (Path(given) / expect / "config.json").is_file():
            hint = f" (its {expect} is {Path(given) / expect})"
        raise CheckpointError(
            f"{given} holds a '{model_type}' model, not an {expect}{hint}; give an {expect} "
            "run folder or snapshot"
        )
    if model_type not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path} holds an unknown model type '{model_type}' "
            f"(known: {', '.join(sorted(MODEL_CLASSES))})"
        )
    return MODEL_CLASSES[model_type].from_pretrained(path, device=device)
