"""DataConfig through the typed config machinery: round trips, overrides, range checks."""

from __future__ import annotations

import pytest

from pvdm.config import ConfigError, apply_overrides, config_from_dict, config_to_dict
from pvdm.data import DataConfig


def test_round_trip_and_overrides() -> None:
    cfg = DataConfig(path="/data/UCF-101", layout="ucf101", split="all", fold=2, resolution=256)
    assert config_from_dict(DataConfig, config_to_dict(cfg)) == cfg
    changed = apply_overrides(cfg, ["frames=8", "layout=sky", "cache=false"])
    assert (changed.frames, changed.layout, changed.cache) == (8, "sky", False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("layout", "kinetics", "layout"),
        ("fold", 4, "fold must be 1, 2 or 3"),
        ("resolution", 4, "resolution must be at least 8"),
        ("stride", 0, "stride must be positive"),
        ("synthetic_frames", 0, "synthetic_frames must be positive"),
    ],
)
def test_bad_values_are_config_errors(field, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(DataConfig, {field: value})
