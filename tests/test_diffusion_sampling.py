"""The generation request: defaults, checks (named as fields or as CLI flags) and its record;
and the noise schedule's own checks."""

from __future__ import annotations

import json
import math

import pytest

from pvdm.diffusion import DEFAULT_SAMPLER, SAMPLERS, NoiseSchedule, SamplingConfig
from pvdm.errors import ConfigError


def test_defaults_fill_in_from_the_sampler_and_the_model() -> None:
    request = SamplingConfig(num=3, seed=7).validate(num_timesteps=1000, clip_frames=8)
    assert request.sampler == DEFAULT_SAMPLER == "ddim-quad"
    assert request.steps == SAMPLERS[request.sampler].default_steps == 8
    assert request.frames == 8 and request.seed_list == [7, 8, 9] and request.num == 3
    # a resolved request can still change its count and seed
    assert request.replace(num=2, seed=1).seed_list == [1, 2]
    assert SamplingConfig(sampler="ddpm").validate(50).steps == 50  # every step
    assert SamplingConfig(sampler="dpm").validate(12).steps == 12  # capped at the schedule
    # seeds given: they decide the count; lists become tuples (a request is immutable)
    given = SamplingConfig(num=1, seeds=[4, 2], labels=["a"]).validate(1000)
    assert given.num == 2 and given.seeds == (4, 2) and given.labels == ("a",)
    assert SamplingConfig(labels="a").labels == ("a",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num": 0}, "num must be at least 1, got 0"),
        ({"frames": -8}, "frames must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"steps": 2.5}, "steps must be at least 1, got 2.5"),
        ({"steps": 1001}, r"steps must lie in \[1, 1000\]"),
        ({"sampler": "ddpm", "steps": 10}, "runs all 1000 steps"),
        ({"sampler": "euler"}, "unknown sampler 'euler'; use one of ddim"),
        ({"seed": -1}, r"seed must lie in \[0, 2\*\*63"),
        ({"seed": 2**63 - 1, "num": 2}, r"seed must lie in \[0, 2\*\*63"),
        ({"seeds": [1, 2**64]}, r"seed must lie in"),
        ({"seeds": []}, "seeds is empty"),
        ({"eta": math.nan}, r"eta must lie in \[0, 1\]"),
        ({"eta": 1.5}, r"eta must lie in \[0, 1\]"),
        ({"guidance": -1.0}, "guidance must be >= 0"),
        ({"class_guidance": math.inf, "labels": ["a"]}, "class_guidance must be >= 0"),
        ({"class_guidance": 2.0}, "class_guidance needs labels"),
        ({"labels": ["a", "b"], "num": 3}, "one class for all videos or one per video"),
    ],
)
def test_bad_values_are_one_error_naming_the_field(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(**fields).validate(1000)


def test_cli_flags_are_named_as_flags() -> None:
    with pytest.raises(ConfigError, match="--batch-size must be at least 1"):
        SamplingConfig(batch_size=0).validate(1000, flags=True)
    with pytest.raises(ConfigError, match="--class-guidance needs --class"):
        SamplingConfig(class_guidance=1.0).validate(1000, flags=True)


def test_the_record_says_what_ran_and_is_json() -> None:
    request = SamplingConfig(num=2, seed=5, sampler="dpm", eta=0.3, guidance=1.5).validate(1000, 8)
    record = request.record()
    assert json.loads(json.dumps(record)) == record
    assert record == {
        "num": 2, "frames": 8, "seeds": [5, 6], "sampler": "dpm", "steps": 20, "eta": None,
        "guidance": 1.5, "class": None, "class_guidance": None, "reencode": True,
    }  # fmt: skip
    ddim = SamplingConfig(sampler="ddim", steps=50, eta=1.0, labels=["x"]).validate(1000)
    assert ddim.record()["eta"] == 1.0 and ddim.record()["class"] == "x"
    assert ddim.label() == "DDIM-50 eta 1"
    assert SamplingConfig(sampler="dpm", steps=20).label() == "DPM-Solver++(2M)-20"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1000, math.nan, 0.02), "need 0 < linear_start < linear_end < 1"),
        ((1000, 0.02, 0.01), "need 0 < linear_start < linear_end < 1"),
        ((1000, 0.001, 1.5), "need 0 < linear_start < linear_end < 1"),
        ((10**9, 0.001, 0.02), r"num_timesteps must lie in \[2, 100000\]"),
        ((1, 0.001, 0.02), "num_timesteps must lie in"),
        ((100.5, 0.001, 0.02), "num_timesteps must be a whole number"),
    ],
)
def test_a_bad_noise_schedule_is_refused(args, message) -> None:
    with pytest.raises(ConfigError, match=message):
        NoiseSchedule(*args)
