"""Hostile or malformed inputs: bounded work and memory, and one clear line instead of a
traceback (detector pickles, videos that grow part-way, checkpoint headers, pipeline.json)."""

from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from data_helpers import deadline

from pvdm.errors import CheckpointError, PvdmError

# --- detector pickles -------------------------------------------------------------------------


def _i3d_like(params_value) -> dict:
    return {"params": {"Conv3d_1a_7x7": params_value}, "batch_stats": {}}


def test_a_pickle_of_shared_dicts_is_refused_at_once(tmp_path) -> None:
    from pvdm.metrics.i3d_detector import load_i3d

    tree = {"kernel": 0}
    for _ in range(40):  # 40 levels of one dict under two keys: 2**40 paths, a few hundred bytes
        tree = {"a": tree, "b": tree}
    path = tmp_path / "i3d.ckpt"
    path.write_bytes(pickle.dumps(_i3d_like(tree), protocol=2))
    assert path.stat().st_size < 1000
    with deadline(10), pytest.raises(CheckpointError, match="shared between entries"):
        load_i3d(path)


def _deep_pickle(levels: int) -> bytes:
    """A protocol-2 pickle of {"params": {"Conv3d_1a_7x7": {"a": {"a": ...}}}, "batch_stats": {}}
    with `levels` nested dicts, written op by op (pickle.dumps itself would recurse)."""

    def key(text: str) -> bytes:
        data = text.encode()
        return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE

    ops = b"\x80\x02}" + key("batch_stats") + b"}s" + key("params") + b"}" + key("Conv3d_1a_7x7")
    ops += (b"}" + key("a")) * levels + b"}" + b"s" * levels  # the chain, closed inside out
    return ops + b"ss."  # Conv3d_1a_7x7 into params, params into the root


def test_a_deeply_nested_pickle_is_one_error_not_a_recursion_error(tmp_path) -> None:
    from pvdm.metrics.i3d_detector import load_i3d

    path = tmp_path / "i3d.ckpt"
    path.write_bytes(_deep_pickle(50_000))
    with pytest.raises(CheckpointError, match="nested more than 16 levels"):
        load_i3d(path)


# --- videos whose frames grow ---------------------------------------------------------------


def _growing_video(path, sizes: tuple[int, ...] = (16, 64)) -> None:
    """An MPEG-TS file of 4 frames at each size in turn (the decoder follows the change)."""
    parts = []
    for size in sizes:
        part = path.with_suffix(f".{size}.ts")
        with av.open(str(part), "w", format="mpegts") as container:
            stream = container.add_stream("mpeg2video", rate=8)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(4):
                image = np.full((size, size, 3), 40 * i, dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        parts.append(part.read_bytes())
    path.write_bytes(b"".join(parts))


def test_every_decoded_frame_is_held_to_the_size_limit(tmp_path, monkeypatch) -> None:
    import pvdm.data.decode as decode
    from pvdm.data.meta import ReadError

    path = tmp_path / "grows.ts"
    _growing_video(path)
    monkeypatch.setattr(decode, "MAX_FRAME_PIXELS", 32 * 32)
    info = decode.probe(path)  # the first frame is small: the probe passes
    assert (info.width, info.height) == (16, 16) and info.num_frames >= 6
    assert decode.read_frames(path, info, [0, 1]).shape == (2, 16, 16, 3)
    for resolution in (None, 8):
        with pytest.raises(ReadError, match="64x64 are too large"):
            decode.read_frames(path, info, [0, 5], resolution=resolution)
    with pytest.raises(ReadError, match="64x64 are too large"):
        decode.decode_all(path)


# --- checkpoint headers and weights -------------------------------------------------------


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    """A debug UNet saved by pvdm: its weights and its header."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from pvdm.models import TriplaneUNet, unet_preset

    torch.manual_seed(0)
    path = TriplaneUNet(unet_preset("debug")).save_pretrained(tmp_path_factory.mktemp("u") / "m")
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        header = json.loads(f.metadata()["pvdm"])
    return load_file(str(path / "model.safetensors")), header


def _header(header: dict, **changes) -> str:
    changed = {k: v for k, v in {**header, **changes}.items() if v is not None}
    return json.dumps(changed)


@pytest.mark.parametrize(
    "case,match",
    [
        ("not json", "header that is not JSON"),
        ("a list", "invalid pvdm header"),
        ("no config", "without a model type and config object"),
        ("config a list", "without a model type and config object"),
        ("model type a list", "without a model type and config object"),
        ("deep", "nested deeper than 100 levels"),
        ("int weights", r"as int32 values, but the model's .* is float32"),
        ("bool weights", r"as bool values, but the model's .* is float32"),
    ],
)
def test_malformed_checkpoints_are_one_checkpoint_error(tmp_path, unet_file, case, match):
    from safetensors.torch import save_file

    from pvdm.models import load_model

    tensors, header = unet_file
    raw = {
        "not json": "{not json",
        "a list": "[1, 2]",
        "no config": _header(header, config=None),
        "config a list": _header(header, config=[1]),
        "model type a list": _header(header, model_type=["unet"]),
        "deep": "[" * 100_000 + "]" * 100_000,
    }.get(case, json.dumps(header))
    if case == "int weights":
        tensors = {k: (v * 100).to(torch.int32) for k, v in tensors.items()}
    if case == "bool weights":
        tensors = {k: v > 0 for k, v in tensors.items()}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"pvdm": raw, "format": "pt"})
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_i3d_state_dicts_of_integers_are_refused(tmp_path) -> None:
    from eval_helpers import random_i3d_state

    from pvdm.metrics.i3d_detector import load_i3d

    state = {k: (v * 100).to(torch.int64) for k, v in random_i3d_state().items()}
    with pytest.raises(CheckpointError, match="integer or bool values"):
        load_i3d(state)
    path = tmp_path / "i3d.pt"
    torch.save({**random_i3d_state(), "Conv3d_1a_7x7.bn.bias": 3}, path)
    with pytest.raises(CheckpointError, match="not tensors"):
        load_i3d(path)


def test_a_deeply_nested_pipeline_json_is_one_error(tmp_path) -> None:
    from pvdm.diffusion.pipeline import PIPELINE_FILE, PVDMPipeline

    (tmp_path / PIPELINE_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PvdmError, match=f"{PIPELINE_FILE} cannot be read"):
        PVDMPipeline.from_pretrained(tmp_path)


def test_parse_json_bounds_the_depth() -> None:
    from pvdm.jsonl import parse_json

    assert parse_json(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert parse_json("[" * 100 + "]" * 100) is not None
    for depth in (101, 100_000):
        with pytest.raises(json.JSONDecodeError, match="nested deeper than 100 levels"):
            parse_json("[" * depth + "]" * depth)


# --- what the serve page reads ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    """A random debug pipeline saved by pvdm (32x32, 8-frame clips)."""
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    pipe = PVDMPipeline(
        TriplaneUNet(unet_preset("debug")), TriplaneAutoencoder(autoencoder_preset("debug"))
    )
    return pipe.save_pretrained(tmp_path_factory.mktemp("pipe") / "pipe")


@pytest.mark.parametrize(
    "config_yaml", ["- 1\n- 2\n", "data: [1]\ntrain: 3\n", "[" * 5000 + "]" * 5000, b"\xff\xfe"]
)
def test_the_model_card_shows_odd_run_files_instead_of_failing(
    tmp_path, pipeline_folder, config_yaml
) -> None:
    import shutil

    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.serve.model_card import LADDER_FILE, model_card

    folder = Path(shutil.copytree(pipeline_folder, tmp_path / "run"))
    raw = config_yaml if isinstance(config_yaml, bytes) else config_yaml.encode()
    (folder / "config.yaml").write_bytes(raw)
    records = [
        {"metric": "fvd16_16f", "results": [123.5, 7], "num_fake": 16, "num_real": 16},
        {"metric": "isv16", "results": "n/a"},
    ]
    for r in records:
        (folder / f"metric-{r['metric']}.jsonl").write_text(json.dumps(r) + "\n")
    (folder / LADDER_FILE).write_text("[" * 100_000 + "]" * 100_000)
    card = model_card(PVDMPipeline.from_pretrained(folder), folder)
    assert "| fvd16_16f | [123.5, 7] | 16 / 16 |" in card
    assert "| isv16 | n/a | ? / ? |" in card
    assert "| training |" not in card and "FVD ladder" not in card


@pytest.mark.parametrize("name", ["config.yaml", "config.json"])
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, b"\xff\xfe not text"])
def test_a_run_config_that_cannot_be_parsed_is_one_config_error(tmp_path, name, text) -> None:
    from pvdm.config import ConfigError, load_config
    from pvdm.train.diffusion import DiffusionRunConfig

    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=re.escape(f"cannot parse config file {path}")):
        load_config(DiffusionRunConfig, path)


def test_a_deeply_nested_cache_manifest_is_one_data_error(tmp_path) -> None:
    from pvdm.diffusion.cache import LatentCache
    from pvdm.errors import DataError

    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"manifest\.json cannot be read"):
        LatentCache(tmp_path)
