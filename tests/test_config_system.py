"""The typed config machinery: strict dict round trips, files, overrides, clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from pvdm.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


@dataclass
class Inner:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    mode: Literal["l1", "l2"] = "l2"

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")


@dataclass
class Outer:
    name: str = "run"
    steps: int = 10
    path: str | None = None
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_dict_round_trip_preserves_values() -> None:
    cfg = Outer(name="x", steps=3, path="/a", sizes=[4], flag=True, inner=Inner(lr=0.5))
    data = config_to_dict(cfg)
    assert data["inner"]["betas"] == [0.9, 0.999]
    assert config_from_dict(Outer, data) == cfg


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip(tmp_path, suffix) -> None:
    cfg = Outer(steps=7, inner=Inner(lr=3e-5, mode="l1"))
    path = save_config(cfg, tmp_path / f"cfg{suffix}")
    assert load_config(Outer, path) == cfg


def test_yaml_scientific_float_string_accepted(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("inner:\n  lr: 1e-4\n")
    assert load_config(Outer, tmp_path / "c.yaml").inner.lr == pytest.approx(1e-4)


def test_unknown_key_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"unknown config field 'inner\.lrr'"):
        config_from_dict(Outer, {"inner": {"lrr": 1.0}})


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"'steps' expects int, got 'ten'"):
        config_from_dict(Outer, {"steps": "ten"})
    with pytest.raises(ConfigError, match=r"'flag' expects bool"):
        config_from_dict(Outer, {"flag": 1})
    with pytest.raises(ConfigError, match=r"'inner\.mode' expects 'l1' \| 'l2'"):
        config_from_dict(Outer, {"inner": {"mode": "huber"}})


def test_validate_runs_on_nested_sections() -> None:
    with pytest.raises(ConfigError, match="lr must be positive"):
        config_from_dict(Outer, {"inner": {"lr": -1.0}})


def test_overrides_are_typed() -> None:
    cfg = apply_overrides(
        Outer(),
        ["steps=5", "inner.lr=2e-3", "name=123", "sizes=[3, 4]", "flag=true", "path=none"],
    )
    assert cfg.steps == 5 and cfg.inner.lr == pytest.approx(2e-3)
    assert cfg.name == "123"  # str fields keep the text
    assert cfg.sizes == [3, 4] and cfg.flag is True and cfg.path is None


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown config field 'inner\.nope'"):
        apply_overrides(Outer(), ["inner.nope=1"])
    with pytest.raises(ConfigError, match=r"'steps' expects int"):
        apply_overrides(Outer(), ["steps=1.5"])
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides(Outer(), ["steps"])
    with pytest.raises(ConfigError, match="lr must be positive"):
        apply_overrides(Outer(), ["inner.lr=0"])


def test_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("steps: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(Outer, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="must end in"):
        load_config(Outer, tmp_path / "cfg.txt")


@dataclass
class Guard:
    on_divergence: Literal["stop", "rollback", "off"] = "stop"


def test_a_choice_named_off_survives_yaml_and_overrides(tmp_path) -> None:
    """YAML 1.1 reads an unquoted `off` as false: a choice spelled so still comes back as the
    string, from a file and from `--set`; a bool that names no choice is still an error."""
    (tmp_path / "c.yaml").write_text("on_divergence: off\n")
    assert load_config(Guard, tmp_path / "c.yaml").on_divergence == "off"
    assert apply_overrides(Guard(), ["on_divergence=off"]).on_divergence == "off"
    assert apply_overrides(Guard(), ["on_divergence=rollback"]).on_divergence == "rollback"
    with pytest.raises(ConfigError, match="on_divergence"):
        config_from_dict(Guard, {"on_divergence": True})
    with pytest.raises(ConfigError, match="on_divergence"):
        apply_overrides(Guard(), ["on_divergence=maybe"])
