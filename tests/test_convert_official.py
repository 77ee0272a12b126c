"""Official PVDM equivalence: golden vectors of the official networks, key mapping, strict loading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from einops import rearrange

from pvdm.convert import (
    OFFICIAL_DDCONFIG,
    OFFICIAL_UNET_CONFIG,
    autoencoder_config_from_official,
    autoencoder_state_to_official,
    load_official_pth,
    official_autoencoder,
    official_unet,
    unet_config_from_official,
    unet_state_to_official,
)
from pvdm.errors import CheckpointError, ConfigError
from pvdm.models import autoencoder_preset, unet_preset
from pvdm.models.latent import LatentShape, TriplaneLatent

GOLDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden" / "official"
TOLERANCE = 1e-5  # relative L2 error, see the golden README

UNET_LATENT = LatentShape(4, 16, 32, 32)  # the golden files' latents (C, T', H', W')
AE_LATENT = LatentShape(4, 16, 8, 8)


def _golden(name: str) -> dict[str, torch.Tensor]:
    path = GOLDEN / name
    if not path.is_file():
        pytest.skip(f"golden vectors not found at {path} (the shared materials are absent)")
    from safetensors.torch import load_file

    return load_file(str(path))


def _configs() -> dict:
    path = GOLDEN / "configs.json"
    if not path.is_file():
        pytest.skip(f"golden configs not found at {path}")
    return json.loads(path.read_text())


def _state(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # stored float16 (rounded before the outputs were computed): cast to float32
    return {
        k.removeprefix("state."): v.float() for k, v in golden.items() if k.startswith("state.")
    }


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """||ours - ref|| / ||ref||; NaN never passes."""
    err = ((ours.double() - ref.double()).norm() / ref.double().norm()).item()
    return err if err == err else float("inf")


@pytest.fixture(scope="module")
def ae_golden():
    golden = _golden("autoencoder_small.safetensors")
    cfg = _configs()["configs"]["autoencoder_small"]
    model = official_autoencoder(_state(golden), cfg["ddconfig"], cfg["embed_dim"])
    return model, golden


@pytest.fixture(scope="module")
def unet_golden():
    golden = _golden("unet_small.safetensors")
    model = official_unet(_state(golden), _configs()["configs"]["unet_small"])
    return model, golden


def test_autoencoder_matches_official(ae_golden) -> None:
    model, golden = ae_golden
    assert not model.training
    video = golden["input.video"]
    with torch.no_grad():
        latent = model.encode(video).pack()
        z = TriplaneLatent.unpack(golden["output.latent"], AE_LATENT)
        recon = rearrange(model.decode(z), "b c t h w -> (b t) c h w")
        forward = rearrange(model(video), "b c t h w -> (b t) c h w")
    errors = {
        "latent": rel_error(latent, golden["output.latent"]),
        "reconstruction": rel_error(recon, golden["output.reconstruction"]),
        "forward": rel_error(forward, golden["output.forward"]),
    }
    print("autoencoder relative errors:", errors)
    assert all(e <= TOLERANCE for e in errors.values()), errors


def test_unet_matches_official(unet_golden) -> None:
    model, golden = unet_golden
    x = TriplaneLatent.unpack(golden["input.latent"], UNET_LATENT)
    cond = TriplaneLatent.unpack(golden["input.cond"], UNET_LATENT)
    t = golden["input.timesteps"]
    with torch.no_grad():
        uncond = model(x, t, cond=None).pack()
        conditional = model(x, t, cond=cond).pack()
    errors = {
        "eps_uncond": rel_error(uncond, golden["output.eps_uncond"]),
        "eps_cond": rel_error(conditional, golden["output.eps_cond"]),
    }
    print("unet relative errors:", errors)
    assert all(e <= TOLERANCE for e in errors.values()), errors


def test_key_mapping_round_trips_to_the_official_state_dict(ae_golden, unet_golden) -> None:
    for (model, golden), to_official, dropped in (
        (ae_golden, autoencoder_state_to_official, {"coords"}),
        (
            unet_golden,
            lambda s: unet_state_to_official(s, unet_golden[0].config),
            {"diffusion_model.zeros"},
        ),
    ):
        original = {k: v for k, v in _state(golden).items() if k not in dropped}
        back = to_official(model.state_dict())
        assert back.keys() == original.keys()
        for k, v in original.items():
            assert back[k].shape == v.shape and torch.equal(back[k], v), k


def test_configs_map_to_the_presets() -> None:
    assert autoencoder_config_from_official(OFFICIAL_DDCONFIG, 4) == autoencoder_preset("official")
    res128 = {**OFFICIAL_DDCONFIG, "resolution": 128}
    assert autoencoder_config_from_official(res128, 4) == autoencoder_preset("official-128")
    assert unet_config_from_official(OFFICIAL_UNET_CONFIG) == unet_preset("official")
    with pytest.raises(ConfigError, match="resblock_updown=False is not supported"):
        unet_config_from_official({**OFFICIAL_UNET_CONFIG, "resblock_updown": False})
    with pytest.raises(ConfigError, match="splits=2"):
        autoencoder_config_from_official({**OFFICIAL_DDCONFIG, "splits": 2}, 4)


def test_bad_state_dicts_raise_one_clear_error() -> None:
    golden = _golden("autoencoder_small.safetensors")
    cfg = _configs()["configs"]["autoencoder_small"]
    state = _state(golden)
    del state["pre_xy.bias"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["post_yt.weight"] = torch.zeros(64, 4)
    with pytest.raises(CheckpointError) as info:
        official_autoencoder(state, cfg["ddconfig"], cfg["embed_dim"])
    message = str(info.value)
    assert "missing key(s): pre_xy.bias" in message
    assert "unexpected key(s): decoder.extra.weight" in message
    assert "post_yt.weight (64, 4) (expected (64, 4, 1, 1))" in message
    unet_state = _state(_golden("unet_small.safetensors"))
    del unet_state["diffusion_model.out.2.bias"]
    with pytest.raises(CheckpointError, match=r"diffusion_model\.out\.2\.bias"):
        official_unet(unet_state, _configs()["configs"]["unet_small"])


def test_full_size_checkpoints_load_strictly() -> None:
    # the released checkpoints' key names and shapes, as meta tensors (no memory)
    shapes = _configs()["full_checkpoint_shapes"]
    ae_state = {k: torch.empty(s, device="meta") for k, s in shapes["autoencoder_full"].items()}
    ae = official_autoencoder(ae_state, OFFICIAL_DDCONFIG, 4)
    assert ae.config == autoencoder_preset("official")
    unet_state = {k: torch.empty(s, device="meta") for k, s in shapes["unet_full"].items()}
    unet = official_unet(unet_state, OFFICIAL_UNET_CONFIG)
    assert unet.config == unet_preset("official")
    counts = shapes["param_counts"]
    assert sum(p.numel() for p in ae.parameters()) == counts["autoencoder_full"] == 62_064_399
    assert sum(p.numel() for p in unet.parameters()) == counts["unet_full"] == 528_273_412


def test_ddp_prefix_is_stripped(unet_golden) -> None:
    golden = unet_golden[1]
    state = {f"module.{k}": v for k, v in _state(golden).items()}
    model = official_unet(state, _configs()["configs"]["unet_small"])
    assert torch.equal(model.out_conv.bias, unet_golden[0].out_conv.bias)


class _Exploit:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_pickles_that_run_code_are_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(1), "payload": _Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_official_pth(tmp_path / "evil.pth")
    assert not marker.exists()
    torch.save({"a": torch.ones(2)}, tmp_path / "good.pth")
    assert torch.equal(load_official_pth(tmp_path / "good.pth")["a"], torch.ones(2))
    with pytest.raises(CheckpointError, match="not found"):
        load_official_pth(tmp_path / "missing.pth")
