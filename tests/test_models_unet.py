"""The triplane UNet: presets, zero init, conditioning, any plane size, kernels, checkpointing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pvdm.config import config_from_dict
from pvdm.errors import ConfigError
from pvdm.models import (
    UNET_PRESETS,
    LatentShape,
    TriplaneUNet,
    UNetConfig,
    randn_latent,
    unet_preset,
)
from pvdm.models.unet_blocks import TokenAttention, downsample, timestep_embedding, upsample

SHAPE = LatentShape(4, 4, 8, 8)


def _randomised(cfg: UNetConfig, seed: int = 0) -> TriplaneUNet:
    """A model with every parameter N(0, 0.05^2), so zero-initialised layers hide nothing."""
    torch.manual_seed(seed)
    model = TriplaneUNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


def _latent(shape: LatentShape = SHAPE, batch: int = 2, seed: int = 1):
    return randn_latent(batch, shape, torch.Generator().manual_seed(seed))


def test_presets_and_lookup_errors() -> None:
    assert set(UNET_PRESETS) >= {"official", "small", "debug"}
    assert unet_preset("small").model_channels == 128
    with pytest.raises(ConfigError, match="known: official"):
        unet_preset("giant")
    with torch.device("meta"):
        official = TriplaneUNet(unet_preset("official"))
    assert sum(p.numel() for p in official.parameters()) == 528_273_412


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        config_from_dict(UNetConfig, {"model_channels": 48})
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        UNetConfig(model_channels=32, channel_mult=[1], num_heads=3).validate()
    with pytest.raises(ConfigError, match="attention must be one of"):
        UNetConfig(attention="flash").validate()  # type: ignore[arg-type]


def test_fresh_model_predicts_zero() -> None:
    # guided-diffusion init: the output convolution starts at zero
    model = TriplaneUNet(unet_preset("debug"))
    eps = model(_latent(), torch.tensor([10, 900]))
    assert torch.equal(eps.pack(), torch.zeros(2, 4, SHAPE.num_tokens))
    res = model.down_blocks[0].res
    assert (
        res.conv2.weight.abs().sum() == 0
        and model.mid_block.joint_attn.proj.weight.abs().sum() == 0
    )


def test_missing_condition_means_zeros() -> None:
    model = _randomised(unet_preset("debug"))
    x, t = _latent(), torch.tensor([3, 700])
    with torch.no_grad():
        uncond = model(x, t)
        zeros = model(x, t, cond=x.zeros_like())
        cond = model(x, t, cond=_latent(seed=5))
    assert torch.equal(uncond.pack(), zeros.pack())
    assert not torch.allclose(uncond.pack(), cond.pack())
    plain = _randomised(dataclasses.replace(unet_preset("debug"), frame_conditional=False))
    with pytest.raises(ValueError, match="not frame-conditional"):
        plain(x, t, cond=x)


def test_class_conditioning_uses_the_null_class_without_labels() -> None:
    cfg = dataclasses.replace(unet_preset("debug"), num_classes=5)
    model = _randomised(cfg)
    x, t = _latent(), torch.tensor([3, 700])
    assert model.label_embed.num_embeddings == 6
    with torch.no_grad():
        none = model(x, t)
        null = model(x, t, labels=torch.tensor([5, 5]))
        real = model(x, t, labels=torch.tensor([0, 4]))
    assert torch.equal(none.pack(), null.pack())
    assert not torch.allclose(none.pack(), real.pack())
    with pytest.raises(ValueError, match="not class-conditional"):
        _randomised(unet_preset("debug"))(x, t, labels=torch.tensor([0, 1]))


def _rotated(z):
    """The planes of z moved one place: (hw, tw, th) -> (th, hw, tw). Needs equal plane sizes."""
    return type(z)(z.th, z.hw, z.tw)


def test_plane_embedding_breaks_the_plane_symmetry() -> None:
    # With equal plane sizes and no condition, the official UNet cannot tell the planes apart:
    # moving the input planes moves the output planes. The plane embedding breaks that.
    cube = LatentShape(4, 8, 8, 8)
    x, t = _latent(cube), torch.tensor([3, 700])
    official = _randomised(unet_preset("debug"))
    assert official.plane_embed is None
    with torch.no_grad():
        moved = official(_rotated(x), t).pack()
        torch.testing.assert_close(moved, _rotated(official(x, t)).pack(), rtol=1e-5, atol=1e-6)
    cfg = dataclasses.replace(unet_preset("debug"), plane_embedding=True)
    model = _randomised(cfg)
    assert model.plane_embed.weight.shape == (3, 4 * cfg.model_channels)
    with torch.no_grad():
        assert not torch.allclose(model(_rotated(x), t).pack(), _rotated(model(x, t)).pack())
        # a zero plane embedding is the official function with the same other weights
        model.plane_embed.weight.zero_()
        plain = official.state_dict()
        plain.update({"plane_embed.weight": model.plane_embed.weight})
        model.load_state_dict(plain)
        torch.testing.assert_close(model(x, t).pack(), official(x, t).pack(), rtol=0, atol=0)
    assert "plane_embed.weight" not in official.state_dict()


@pytest.mark.parametrize("shape", [LatentShape(4, 5, 6, 7), LatentShape(4, 1, 3, 9)])
def test_any_plane_size_works(shape: LatentShape) -> None:
    cfg = dataclasses.replace(unet_preset("debug"), channel_mult=[1, 1, 2])  # two down-samplings
    model = _randomised(cfg)
    x = _latent(shape, batch=1)
    with torch.no_grad():
        eps = model(x, torch.tensor([500]))
    assert eps.shape == shape
    assert torch.isfinite(eps.pack()).all()


def test_odd_size_resampling() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    # ceil mode: the last window averages only the elements it covers
    expected = torch.tensor([[[[2.0, 3.5], [6.5, 8.0]]]])
    assert torch.equal(downsample(x), expected)
    assert torch.equal(
        upsample(expected, (3, 3)),
        expected.repeat_interleave(2, -1).repeat_interleave(2, -2)[..., :3, :3],
    )
    even = torch.randn(1, 2, 4, 6)
    assert torch.equal(downsample(even), torch.nn.functional.avg_pool2d(even, 2))
    assert torch.equal(upsample(even), torch.nn.functional.interpolate(even, scale_factor=2.0))


def test_timestep_embedding_is_cos_then_sin() -> None:
    t = torch.tensor([0, 17, 999])
    emb = timestep_embedding(t, 8)
    k = torch.arange(4, dtype=torch.float64)
    args = t[:, None].double() * torch.exp(-math.log(10000) * k / 4)
    expected = torch.cat([args.cos(), args.sin()], dim=-1)
    torch.testing.assert_close(emb.double(), expected, rtol=1e-5, atol=1e-5)
    assert timestep_embedding(t, 7).shape == (3, 7)


def test_token_attention_is_the_official_legacy_attention() -> None:
    torch.manual_seed(0)
    attn = TokenAttention(64, heads=4, backend="sdpa")
    torch.nn.init.normal_(attn.proj.weight, std=0.1)
    x = torch.randn(2, 64, 10)
    # official QKVAttentionLegacy: split heads first, then q, k, v; q and k each scaled by ch^-1/4
    qkv = torch.nn.functional.conv1d(attn.norm(x), attn.qkv.weight[..., None], attn.qkv.bias)
    q, k, v = qkv.reshape(2 * 4, 3 * 16, 10).split(16, dim=1)
    scale = 1 / math.sqrt(math.sqrt(16))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(2, 64, 10)
    expected = x + torch.nn.functional.conv1d(a, attn.proj.weight[..., None], attn.proj.bias)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_joint_attention_mixes_the_planes() -> None:
    model = _randomised(unet_preset("debug"))
    x, t = _latent(batch=1), torch.tensor([300])
    y = x.map(lambda p: p.clone())
    y.hw += 1.0  # change only the (h, w) plane
    with torch.no_grad():
        a, b = model(x, t), model(y, t)
    assert not torch.allclose(a.th, b.th)  # the (t, h) output sees it


def test_sdpa_and_math_agree_and_checkpointing_keeps_gradients() -> None:
    base = unet_preset("debug")
    x, t = _latent(), torch.tensor([3, 700])
    results = {}
    for name, cfg in {
        "sdpa": base,
        "math": dataclasses.replace(base, attention="math"),
        "checkpointed": dataclasses.replace(base, gradient_checkpointing=True),
    }.items():
        model = _randomised(cfg)
        eps = model(x, t, cond=x)
        eps.pack().square().mean().backward()
        results[name] = (eps.pack().detach(), model.input_conv.weight.grad)
    for name in ("math", "checkpointed"):
        torch.testing.assert_close(results[name][0], results["sdpa"][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[name][1], results["sdpa"][1], rtol=1e-4, atol=1e-7)


def test_checkpointing_keeps_the_plane_embedding_gradient() -> None:
    cfg = dataclasses.replace(unet_preset("debug"), plane_embedding=True)
    x, t = _latent(LatentShape(4, 8, 8, 8)), torch.tensor([3, 700])
    grads = []
    for checkpointed in (False, True):
        model = _randomised(dataclasses.replace(cfg, gradient_checkpointing=checkpointed))
        model(x, t).pack().square().mean().backward()
        grads.append(model.plane_embed.weight.grad)
    assert grads[0].abs().min(dim=1).values.gt(0).all()  # each plane's vector is trained
    assert not torch.allclose(grads[0][0], grads[0][1])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


def test_float_and_scalar_timesteps() -> None:
    model = _randomised(unet_preset("debug"))
    x = _latent()
    with torch.no_grad():
        a = model(x, torch.tensor([250, 250]))
        b = model(x, torch.tensor(250.0))
    torch.testing.assert_close(a.pack(), b.pack())


@pytest.mark.parametrize("name", sorted(UNET_PRESETS))
def test_presets_round_trip_through_config_files(tmp_path, name: str) -> None:
    from pvdm.config import load_config, save_config

    cfg = unet_preset(name)
    assert load_config(UNetConfig, save_config(cfg, tmp_path / "unet.json")) == cfg
