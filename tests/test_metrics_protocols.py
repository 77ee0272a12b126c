"""Metric protocols (names and settings) and the reference-statistics cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pvdm.errors import ConfigError
from pvdm.metrics import PROTOCOLS, FeatureStats, frechet_distance, get_protocol
from pvdm.metrics.protocols import (
    load_refstats,
    refstats_key,
    refstats_path,
    save_refstats,
)


def test_registered_protocols_follow_stylegan_v() -> None:
    fvd16, fvd128 = PROTOCOLS["fvd2048_16f"], PROTOCOLS["fvd2048_128f"]
    assert (fvd16.kind, fvd16.num_fake, fvd16.num_real, fvd16.frames) == ("fvd", 2048, 2048, 16)
    assert fvd128.frames == 128 and fvd128.real_split == "train"
    assert "random offset" in fvd16.real_clip_rule and "skipped" in fvd16.real_clip_rule
    isv = PROTOCOLS["isv2048_ucf"]
    assert (isv.kind, isv.num_fake, isv.num_splits, isv.detector) == ("isv", 2048, 10, "c3d_ucf101")
    sub = PROTOCOLS["fvd2048_128f_subsample8f"]
    assert (sub.frames, sub.stride) == (16, 8)
    assert PROTOCOLS["recon2048_16f"].kind == "recon"
    assert all(get_protocol(name) is p for name, p in PROTOCOLS.items())


def test_lowering_the_count_renames_the_protocol() -> None:
    small = PROTOCOLS["fvd2048_16f"].with_num(256)
    assert (small.name, small.num_fake, small.num_real) == ("fvd256_16f", 256, 256)
    assert PROTOCOLS["fvd2048_128f_subsample8f"].with_num(64).name == "fvd64_128f_subsample8f"
    assert PROTOCOLS["isv2048_ucf"].with_num(100).name == "isv100_ucf"
    assert PROTOCOLS["fvd2048_16f"].with_num(2048) is PROTOCOLS["fvd2048_16f"]
    # The derived name resolves back to the same settings (for cached files and result logs).
    assert get_protocol("fvd256_16f") == small
    assert dataclasses.replace(small, name="x") == dataclasses.replace(
        PROTOCOLS["fvd2048_16f"], name="x", num_fake=256, num_real=256
    )


def test_protocol_errors() -> None:
    with pytest.raises(ConfigError, match="between 1 and 2048"):
        PROTOCOLS["fvd2048_16f"].with_num(4096)
    with pytest.raises(ConfigError, match="at least 10"):
        PROTOCOLS["isv2048_ucf"].with_num(5)
    with pytest.raises(ConfigError, match="unknown metric protocol 'fid50k'"):
        get_protocol("fid50k")
    with pytest.raises(ConfigError, match="unknown metric protocol"):
        get_protocol("fvd4096_16f")


def test_refstats_cache_round_trip_and_key(tmp_path) -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((50, 5)) + 2.0
    stats = FeatureStats.from_features(feats)
    protocol = PROTOCOLS["fvd2048_16f"].with_num(50)
    key = refstats_key("sky:/data/sky:train:256", protocol, "ab" * 32)
    path = refstats_path(key, tmp_path)
    assert path.parent == tmp_path and path.name.startswith("fvd50_16f-")
    assert load_refstats(path, key) is None  # nothing cached yet
    save_refstats(path, stats, key, ddof=protocol.cov_ddof)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    with np.load(path, allow_pickle=False) as data:  # plain arrays, readable without pvdm
        assert int(data["count"]) == 50 and str(data["key_dataset"]) == key.dataset
    loaded = load_refstats(path, key)
    assert loaded.count == 50
    for ddof in (0, 1):
        for got, want in zip(loaded.mean_cov(ddof), stats.mean_cov(ddof)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert frechet_distance(loaded, feats, ddof=0) == pytest.approx(0.0, abs=1e-9)


def test_refstats_key_separates_dataset_protocol_and_detector(tmp_path) -> None:
    protocol = PROTOCOLS["fvd2048_16f"]
    key = refstats_key("ucf:/a:train:256", protocol, "0" * 64)
    others = [
        refstats_key("ucf:/a:train:128", protocol, "0" * 64),
        refstats_key("ucf:/a:train:256", PROTOCOLS["fvd2048_128f"], "0" * 64),
        refstats_key("ucf:/a:train:256", dataclasses.replace(protocol, seed=1), "0" * 64),
        refstats_key("ucf:/a:train:256", protocol, "1" * 64),
    ]
    assert len({key.digest(), *(k.digest() for k in others)}) == 5
    path = refstats_path(key, tmp_path)
    save_refstats(path, FeatureStats.from_features(np.eye(3)), key, ddof=0)
    # A file found under the name but made for another key (e.g. copied by hand) is a miss.
    assert load_refstats(path, others[3]) is None
    path.write_bytes(b"truncated")
    assert load_refstats(path, key) is None
