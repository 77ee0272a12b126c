"""Result records: the metric-<name>.jsonl lines, the printed table, model hashes."""

from __future__ import annotations

import hashlib
import json
import math

from pvdm.metrics import PROTOCOLS
from pvdm.metrics.results import (
    append_record,
    format_table,
    json_safe,
    make_record,
    metric_file,
    model_sha256,
    read_records,
)


def _fvd4(value: float) -> dict:
    protocol = PROTOCOLS["fvd2048_16f"].with_num(4)
    return make_record(protocol, {"fvd4_16f": value}, num_real=4, num_fake=4, total_time_sec=1.25)


def test_make_record_holds_the_protocol_counts_and_time() -> None:
    record = _fvd4(12.5)
    assert record["metric"] == "fvd4_16f" and record["results"] == {"fvd4_16f": 12.5}
    assert record["protocol"]["num_fake"] == 4 and record["protocol"]["frames"] == 16
    assert (record["num_real"], record["num_fake"], record["total_time_sec"]) == (4, 4, 1.25)
    assert record["date"].endswith("+00:00") and record["pvdm_version"]


def test_lines_are_appended_and_read_back(tmp_path) -> None:
    first = _fvd4(1.5)
    second = _fvd4(2.5)
    path = append_record(tmp_path / "out", first)
    assert path == metric_file(tmp_path / "out", "fvd4_16f")
    assert path.name == "metric-fvd4_16f.jsonl"
    with open(path, "a") as f:
        f.write("{torn line\n")  # a crashed writer's partial line is skipped, not fatal
    append_record(tmp_path / "out", second)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == json.loads(json.dumps(first))
    got = read_records(path)
    assert [r["results"]["fvd4_16f"] for r in got] == [1.5, 2.5]


def test_non_finite_values_become_strings() -> None:
    value = {"psnr": math.inf, "x": [math.nan, -math.inf, 1.0], "t": (1, 2)}
    assert json_safe(value) == {"psnr": "inf", "x": ["nan", "-inf", 1.0], "t": [1, 2]}


def test_table_rows() -> None:
    records = [
        _fvd4(-1e-12),
        make_record(
            PROTOCOLS["isv2048_ucf"].with_num(10),
            {"isv10_ucf": 3.14159, "isv10_ucf_std": 0.5},
            num_real=0,
            num_fake=10,
            total_time_sec=2.0,
        ),
        make_record(
            PROTOCOLS["recon2048_16f"].with_num(4),
            {"psnr": 27.5, "ssim": 0.8},
            num_real=4,
            num_fake=4,
            total_time_sec=3.0,
        ),
    ]
    assert format_table(records).splitlines() == [
        "metric           value            real  fake  time",
        "---------------  ---------------  ----  ----  ----",
        "fvd4_16f         0.0000           4     4     1.2s",
        "isv10_ucf        3.1416 ± 0.5000  -     10    2.0s",
        "recon4_16f psnr  27.5000          4     4     3.0s",
        "recon4_16f ssim  0.8000           4     4     3.0s",
    ]


def test_model_hashes_follow_the_pipeline_file(tmp_path) -> None:
    def weights(folder, data: bytes) -> str:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    pipe = tmp_path / "pipe"
    unet = weights(pipe / "unet", b"unet weights")
    ae = weights(pipe / "autoencoder", b"ae weights")
    (pipe / "pipeline.json").write_text(json.dumps({"unet": "unet", "autoencoder": "autoencoder"}))
    assert model_sha256(pipe) == {"unet": unet, "autoencoder": ae}
    # A training run folder: its pipeline points at snapshots/, whose best one is used.
    run = tmp_path / "run"
    weights(run / "snapshots" / "step-00000010", b"old")
    best = weights(run / "snapshots" / "best", b"best")
    ae = weights(run / "autoencoder", b"ae")
    (run / "pipeline.json").write_text(
        json.dumps({"unet": "snapshots", "autoencoder": "autoencoder"})
    )
    assert model_sha256(run) == {"unet": best, "autoencoder": ae}
    # One model (an autoencoder run or snapshot).
    assert model_sha256(run / "snapshots" / "best") == {"model": best}
    assert model_sha256(tmp_path / "missing") == {"model": None}
