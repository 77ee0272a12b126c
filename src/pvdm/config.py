"""Typed configuration: dataclasses are the single source of truth.

Every config is a (nested) dataclass with type hints. This module turns them into plain dicts
and back with strict checking (an unknown key or a wrong type is one `ConfigError` naming the
field), loads and saves them as YAML or JSON, and applies `--set a.b=value` overrides. A config
class may define `validate(self)` to check value ranges; it runs whenever a config is built
from a dict, a file or overrides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from pvdm.atomic import atomic_write_text
from pvdm.errors import ConfigError
from pvdm.jsonl import parse_json

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "save_config",
]


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain nested dicts and lists (JSON/YAML friendly)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build `cls` from a dict, rejecting unknown keys and wrong types; missing keys keep defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config section '{where or cls.__name__}' must be a mapping, got {type(data).__name__}"
        )
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        name = _join(where, str(unknown[0]))
        raise ConfigError(f"unknown config field '{name}' (known fields here: {known})")
    kwargs = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    try:
        cfg = cls(**kwargs)
    except TypeError as e:  # a required field without a default is missing
        raise ConfigError(f"config section '{where or cls.__name__}': {e}") from None
    _validate(cfg, where)
    return cfg


def _validate(cfg: Any, where: str) -> None:
    validate = getattr(cfg, "validate", None)
    if validate is None:
        return
    try:
        validate()
    except ConfigError as e:
        if where and not str(e).startswith(where):
            raise ConfigError(f"{where}.{e}") from None
        raise


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the type hint `tp`, converting only where lossless."""
    origin = get_origin(tp)
    wrong = ConfigError(f"config field '{where}' expects {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise wrong
        return config_from_dict(tp, value, where=where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise wrong
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted off / on / yes / no as a bool
            words = ("true", "yes", "on") if value else ("false", "no", "off")
            named = [a for a in get_args(tp) if isinstance(a, str) and a.lower() in words]
            if len(named) == 1:
                return named[0]
        raise wrong
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise wrong
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), where)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                number = float(value)
            except ValueError:
                raise wrong from None
            return _finite(number, where)
        raise wrong
    if tp is str:
        if isinstance(value, str):
            return value
        raise wrong
    if origin in (list, tuple, Sequence, typing.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise wrong
        args = get_args(tp) or (Any,)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(
                    f"config field '{where}' expects {len(args)} values, got {len(value)}"
                )
            return tuple(
                _coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))
            )
        item = args[0]
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise wrong
        key_t, val_t = get_args(tp) or (Any, Any)
        return {
            _coerce(key_t, k, f"{where}.{k}"): _coerce(val_t, v, f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise wrong


def _finite(value: float, where: str) -> float:
    # NaN passes every range check (nan <= 0 is False) and is unequal to itself, so a saved
    # NaN would make the run folder refuse every resume: no config field accepts it.
    if not math.isfinite(value):
        raise ConfigError(f"config field '{where}' must be a finite number, got {value}")
    return value


def dump_config(cfg: Any, fmt: Literal["yaml", "json"] = "yaml") -> str:
    """A config as YAML or JSON text."""
    data = config_to_dict(cfg)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write a config atomically as YAML (.yaml/.yml) or JSON (.json)."""
    path = Path(path)
    fmt = _format(path)
    atomic_write_text(path, dump_config(cfg, fmt))
    return path


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML or JSON config file into `cls`, with strict checking."""
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = parse_json(text) if fmt == "json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    try:
        return config_from_dict(cls, data or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _format(path: Path) -> Literal["yaml", "json"]:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise ConfigError(f"config file {path} must end in .yaml, .yml or .json")


def apply_overrides(cfg: T, assignments: Sequence[str]) -> T:
    """Return a copy of `cfg` with `a.b=value` assignments applied and type-checked.

    Values are parsed by the type of the field they set: `str` fields take the text as is,
    `null`/`none` sets an optional field to None, lists are written as YAML (`[1, 2]`).
    """
    if not assignments:
        return cfg
    cls = type(cfg)
    data = config_to_dict(cfg)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{assignment}' must look like section.field=value")
        field_type = _field_type(cls, key)
        target = data
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = _parse_override(field_type, text.strip(), key)
    return config_from_dict(cls, data)


def _field_type(cls: type, key: str) -> Any:
    tp: Any = cls
    walked = []
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"unknown config field '{key}' ('{'.'.join(walked)}' has no fields)")
        hints = get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        if part not in names:
            prefix = ".".join(walked)
            raise ConfigError(
                f"unknown config field '{key}' (known fields"
                f"{' in ' + prefix if prefix else ''}: {', '.join(sorted(names))})"
            )
        tp = hints[part]
        walked.append(part)
    return tp


def _parse_override(tp: Any, text: str, key: str) -> Any:
    optional = get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)
    if optional and text.lower() in ("none", "null", "~", ""):
        return None
    base = tp
    if optional:
        rest = [a for a in get_args(tp) if a is not type(None)]
        base = rest[0] if len(rest) == 1 else tp
    if base is str or (
        get_origin(base) is Literal and all(isinstance(a, str) for a in get_args(base))
    ):
        return text
    if base is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"config field '{key}' expects bool (true/false), got {text!r}")
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"config field '{key}' expects float, got {text!r}") from None
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"config field '{key}' expects int, got {text!r}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"config field '{key}': cannot parse {text!r}") from None
