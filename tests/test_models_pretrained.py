"""save_pretrained / from_pretrained / load_model: bit-identical round trips, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pvdm.errors import CheckpointError
from pvdm.models import (
    LatentShape,
    TriplaneAutoencoder,
    TriplaneUNet,
    autoencoder_preset,
    load_model,
    randn_latent,
    read_header,
    unet_preset,
)
from pvdm.models.pretrained import FORMAT_VERSION, check_state_dict


@pytest.fixture(scope="module")
def autoencoder() -> TriplaneAutoencoder:
    torch.manual_seed(0)
    return TriplaneAutoencoder(autoencoder_preset("debug")).eval()


@pytest.fixture(scope="module")
def unet() -> TriplaneUNet:
    torch.manual_seed(0)
    model = TriplaneUNet(unet_preset("debug")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


def _video() -> torch.Tensor:
    return torch.rand(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_directory_round_trip_is_bit_identical(tmp_path, autoencoder) -> None:
    path = autoencoder.save_pretrained(tmp_path / "ae", metadata={"step": 1234})
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    on_disk = json.loads((path / "config.json").read_text())
    assert on_disk["format"] == "pvdm" and on_disk["format_version"] == FORMAT_VERSION
    assert on_disk["model_type"] == "autoencoder"
    assert on_disk["config"]["width"] == 64 and on_disk["metadata"] == {"step": 1234}
    with safe_open(str(path / "model.safetensors"), "pt") as f:  # self-describing weights
        assert json.loads(f.metadata()["pvdm"]) == on_disk
    loaded = TriplaneAutoencoder.from_pretrained(path)
    assert not loaded.training and loaded.config == autoencoder.config
    video = _video()
    with torch.no_grad():
        assert torch.equal(loaded(video), autoencoder(video))
    for k, v in autoencoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_single_file_round_trip_and_load_model(tmp_path, unet) -> None:
    path = unet.save_pretrained(tmp_path / "unet.safetensors")
    assert path.is_file() and not (tmp_path / "config.json").exists()
    loaded = load_model(path)
    assert isinstance(loaded, TriplaneUNet) and read_header(path)["model_type"] == "unet"
    x = randn_latent(2, LatentShape(4, 4, 8, 8), torch.Generator().manual_seed(1))
    t = torch.tensor([5, 600])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, cond=x).pack(), unet(x, t, cond=x).pack())
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_load_model_dispatches_and_overrides(tmp_path, autoencoder) -> None:
    path = autoencoder.save_pretrained(tmp_path / "ae")
    assert isinstance(load_model(path), TriplaneAutoencoder)
    math_model = TriplaneAutoencoder.from_pretrained(path, config_overrides={"attention": "math"})
    assert math_model.config.attention == "math"
    with torch.no_grad():
        torch.testing.assert_close(
            math_model(_video()), autoencoder(_video()), rtol=1e-5, atol=1e-5
        )


def test_wrong_model_type_is_refused(tmp_path, autoencoder) -> None:
    path = autoencoder.save_pretrained(tmp_path / "ae")
    with pytest.raises(CheckpointError, match="holds a 'autoencoder' model, not a 'unet'"):
        TriplaneUNet.from_pretrained(path)


def test_missing_and_foreign_files_are_clear_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no model weights"):
        load_model(tmp_path / "nothing")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no pvdm header"):
        load_model(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")


def test_inconsistent_or_newer_checkpoints_are_refused(tmp_path, autoencoder) -> None:
    path = autoencoder.save_pretrained(tmp_path / "ae")
    header = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**header, "model_type": "unet"}))
    with pytest.raises(CheckpointError, match="disagrees with the header"):
        load_model(path)
    state = {k: v.contiguous() for k, v in autoencoder.state_dict().items()}
    newer = {**header, "format_version": FORMAT_VERSION + 1}
    save_file(state, str(tmp_path / "new.safetensors"), metadata={"pvdm": json.dumps(newer)})
    with pytest.raises(CheckpointError, match="newer than this pvdm"):
        load_model(tmp_path / "new.safetensors")


def test_missing_key_names_the_key(tmp_path, autoencoder) -> None:
    header = {"format": "pvdm", "format_version": 1, "model_type": "autoencoder"}
    header["config"] = json.loads(
        (autoencoder.save_pretrained(tmp_path / "ae") / "config.json").read_text()
    )["config"]
    state = {k: v.contiguous() for k, v in autoencoder.state_dict().items()}
    del state["pixel_head.bias"]
    save_file(state, str(tmp_path / "cut.safetensors"), metadata={"pvdm": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): pixel_head.bias"):
        load_model(tmp_path / "cut.safetensors")


def test_check_state_dict_reports_every_problem_at_once() -> None:
    expected = {"a": (2,), "b": (3, 4), "c": (1,)}
    given = {"a": (2,), "b": (4, 3), "d": (5,)}
    with pytest.raises(CheckpointError) as info:
        check_state_dict(expected, given, "test")
    message = str(info.value)
    assert "1 missing key(s): c" in message
    assert "1 unexpected key(s): d" in message
    assert "1 mis-shaped key(s): b (4, 3) (expected (3, 4))" in message


def test_pipeline_round_trip_keeps_a_non_default_schedule(tmp_path) -> None:
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.diffusion.schedule import NoiseSchedule
    from pvdm.models.unet import TriplaneUNet, unet_preset

    schedule = NoiseSchedule(num_timesteps=50, linear_start=0.001, linear_end=0.03)
    ae = TriplaneAutoencoder(autoencoder_preset("debug")).eval()
    pipe = PVDMPipeline(TriplaneUNet(unet_preset("debug")).eval(), ae, schedule, ["a", "b"])
    loaded = PVDMPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "pipe"))
    assert loaded.schedule.num_timesteps == 50
    assert torch.equal(loaded.schedule.betas, schedule.betas)
    assert loaded.classes == ["a", "b"]


def test_load_model_takes_a_run_folder(tmp_path, unet) -> None:
    from pvdm.models.pretrained import MODEL_CLASSES
    from pvdm.runs import snapshot_dir

    assert {"autoencoder": TriplaneAutoencoder, "unet": TriplaneUNet} == MODEL_CLASSES
    run = tmp_path / "run"
    for step in (10, 20):
        unet.save_pretrained(snapshot_dir(run, step), metadata={"step": step})
    assert read_header(snapshot_dir(run, 20))["metadata"]["step"] == 20
    newest = load_model(run)  # no best/: the newest step snapshot
    assert torch.equal(newest.state_dict()["input_conv.weight"], unet.input_conv.weight)
    other = TriplaneUNet(unet_preset("debug"))
    other.save_pretrained(snapshot_dir(run, "best"))
    best = load_model(run)
    assert torch.equal(best.state_dict()["input_conv.weight"], other.input_conv.weight)
    assert not torch.equal(best.state_dict()["input_conv.weight"], unet.input_conv.weight)
    with pytest.raises(CheckpointError, match="no model weights"):
        load_model(tmp_path / "empty")


def test_load_model_expect_refuses_another_model_type(tmp_path, unet, autoencoder) -> None:
    # a diffusion run folder: its snapshots are UNets, its own autoencoder sits beside them
    unet.save_pretrained(tmp_path / "run" / "snapshots" / "step-00000001")
    autoencoder.save_pretrained(tmp_path / "run" / "autoencoder")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "run", expect="autoencoder")
    assert str(info.value) == (
        f"{tmp_path / 'run'} holds a 'unet' model, not an autoencoder (its autoencoder is "
        f"{tmp_path / 'run' / 'autoencoder'}); give an autoencoder run folder or snapshot"
    )
    model = load_model(tmp_path / "run" / "autoencoder", expect="autoencoder")
    assert isinstance(model, TriplaneAutoencoder)
    for a, b in zip(model.state_dict().values(), autoencoder.state_dict().values()):
        assert torch.equal(a, b)
