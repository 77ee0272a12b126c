"""The triplane autoencoder: presets, generalised sizes, rotary quirks, kernels, checkpointing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pvdm.config import config_from_dict
from pvdm.errors import ConfigError
from pvdm.models import (
    AUTOENCODER_PRESETS,
    AutoencoderConfig,
    LatentShape,
    TriplaneAutoencoder,
    autoencoder_preset,
)
from pvdm.models.attention import GroupNorm32, LayerNorm32
from pvdm.models.autoencoder import PixelHead
from pvdm.models.projection import PlanePooling
from pvdm.models.rotary import (
    apply_rotary,
    axial_rotary,
    axial_scales,
    temporal_inv_freqs,
    temporal_rotary,
)

TINY = dict(width=32, depth=1, heads=2, head_dim=8, projection_depth=2, projection_head_dim=8)


def _video(cfg: AutoencoderConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 3, cfg.frames, cfg.resolution, cfg.resolution)
    return torch.rand(shape, generator=g) * 2 - 1


def _model(cfg: AutoencoderConfig, seed: int = 0) -> TriplaneAutoencoder:
    torch.manual_seed(seed)
    return TriplaneAutoencoder(cfg)


def test_presets_and_lookup_errors() -> None:
    assert set(AUTOENCODER_PRESETS) >= {"official", "official-128", "debug"}
    official = autoencoder_preset("official")
    assert (official.resolution, official.frames, official.patch_size) == (256, 16, 8)
    assert (official.width, official.latent_channels, official.latent_side) == (384, 4, 32)
    assert autoencoder_preset("official-128").latent_side == 32
    with pytest.raises(ConfigError, match="known: official"):
        autoencoder_preset("huge")


def test_parameter_counts_match_the_spec() -> None:
    expected = {"official": 62_064_399, "official-128": 61_953_807}
    for name, count in expected.items():
        with torch.device("meta"):
            model = TriplaneAutoencoder(autoencoder_preset(name))
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        config_from_dict(AutoencoderConfig, {"resolution": 100, "patch_size": 8})
    with pytest.raises(ConfigError, match="head_dim must be a multiple of 4"):
        AutoencoderConfig(head_dim=6).validate()
    with pytest.raises(ConfigError, match="frames must be a positive"):
        AutoencoderConfig(frames=0).validate()


def test_debug_preset_round_trip_shapes_and_ranges() -> None:
    cfg = autoencoder_preset("debug")
    model = _model(cfg).eval()
    video = _video(cfg)
    with torch.no_grad():
        z = model.encode(video)
        recon = model.decode(z)
        again = model(video)
    assert z.shape == model.latent_shape() == LatentShape(4, 8, 8, 8)
    assert z.pack().abs().max() < 1  # after tanh
    assert recon.shape == video.shape and recon.abs().max() <= 1
    assert torch.equal(recon, again)


@pytest.mark.parametrize(
    ("resolution", "patch", "frames"), [(128, 16, 8), (128, 16, 32), (48, 8, 5), (24, 4, 3)]
)
def test_any_resolution_and_frame_count(resolution: int, patch: int, frames: int) -> None:
    cfg = AutoencoderConfig(resolution=resolution, patch_size=patch, frames=frames, **TINY)
    model = _model(cfg).eval()
    side = resolution // patch
    assert model.pool["hw"].pos_embedding.shape[1] == frames + 1
    assert model.pool["tw"].pos_embedding.shape[1] == side + 1
    with torch.no_grad():
        z = model.encode(_video(cfg, batch=1))
        out = model.decode(z)
    assert z.shape == LatentShape(4, frames, side, side)
    assert out.shape == (1, 3, frames, resolution, resolution)
    assert torch.isfinite(out).all()


def test_wrong_video_shape_is_a_clear_error() -> None:
    model = _model(autoencoder_preset("debug"))
    with pytest.raises(ValueError, match=r"expected video \[B, 3, 8, 32, 32\]"):
        model.encode(torch.zeros(1, 3, 16, 32, 32))


def test_pixel_head_is_the_official_transposed_convolution() -> None:
    torch.manual_seed(0)
    head = PixelHead(width=16, patch_size=4)
    conv = torch.nn.ConvTranspose2d(16, 3, 4, stride=4)
    conv.weight.data.copy_(head.weight.data)
    conv.bias.data.copy_(head.bias.data)
    x = torch.randn(2, 5, 3, 6, 16)  # [B, T, H', W', C]
    expected = conv(x.permute(0, 1, 4, 2, 3).flatten(0, 1))  # [(B T), 3, 4 H', 4 W']
    got = head(x).permute(0, 2, 1, 3, 4).flatten(0, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_decoder_depth_and_pixel_refiner_are_options_off_by_default() -> None:
    """Not official: a deeper decoder and a convolutional refiner on the decoded pixels (the
    debug recipe's capacity measurements). Off, the model keeps the official key set; the
    refiner starts as the identity on the pixel head's logits."""
    from dataclasses import replace

    cfg = autoencoder_preset("debug")
    plain = _model(cfg)
    assert not any(k.startswith("refine") for k in plain.state_dict())
    assert len(plain.decoder.blocks) == cfg.depth
    deeper = _model(replace(cfg, decoder_depth=3, refine_channels=4))
    assert len(deeper.decoder.blocks) == 3 and len(deeper.encoder.blocks) == cfg.depth
    assert deeper.pixel_head.weight.shape[1] == 3 + 4
    torch.manual_seed(0)
    video = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        out = deeper(video)
        deeper.refine = None  # the plain head's first three channels
        deeper.pixel_head.weight.data = deeper.pixel_head.weight.data[:, :3].contiguous()
        deeper.pixel_head.bias.data = deeper.pixel_head.bias.data[:3].contiguous()
        torch.testing.assert_close(out, deeper(video))
    refined = _model(replace(cfg, refine_channels=4))
    with torch.no_grad():
        before = refined(video)
        refined.refine.conv_out.weight.fill_(0.01)  # the refiner's residual now reaches the output
        assert (refined(video) - before).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="refine_channels must be a positive integer"):
        replace(cfg, refine_channels=0).validate()


def _official_rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """The official formula: x * cos + rotate_every_two(x) * sin."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


def test_temporal_rotary_keeps_the_official_frequency_layout() -> None:
    d, n = 8, 5
    positions = torch.arange(n, dtype=torch.float64)[:, None]
    # official: dimension j uses frequency 10000^(-2 (j mod d/2) / d), laid out in halves
    freqs = 10000.0 ** (-2.0 * (torch.arange(d) % (d // 2)).double() / d)
    angles = positions * freqs
    x = torch.randn(3, n, d)
    got = apply_rotary(x, temporal_rotary(n, temporal_inv_freqs(d), "official"))
    expected = _official_rotate(x.double(), angles.sin(), angles.cos())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    # the quirk: pairs turn by different angles, so norms are not preserved ...
    pair_norms = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731
    assert not torch.allclose(pair_norms(got), pair_norms(x), atol=1e-3)
    # ... while the "paired" layout is a true rotation
    paired = apply_rotary(x, temporal_rotary(n, temporal_inv_freqs(d), "paired"))
    torch.testing.assert_close(pair_norms(paired), pair_norms(x), rtol=1e-5, atol=1e-6)


def test_axial_rotary_matches_the_official_formula() -> None:
    d, h, w = 16, 3, 4
    scales = 2.0 ** torch.linspace(0, math.log2(5), d // 4, dtype=torch.float64)
    rows = torch.linspace(-1, 1, h, dtype=torch.float64)
    cols = torch.linspace(-1, 1, w, dtype=torch.float64)
    angles = torch.zeros(h * w, d, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            half = torch.cat([math.pi * rows[i] * scales, math.pi * cols[j] * scales])
            angles[i * w + j] = half.repeat_interleave(2)
    x = torch.randn(2, h * w, d)
    got = apply_rotary(x, axial_rotary(h, w, axial_scales(d)))
    expected = _official_rotate(x.double(), angles.sin(), angles.cos())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_projection_reads_position_zero_by_default() -> None:
    torch.manual_seed(0)
    pool = PlanePooling(16, length=5, depth=2, heads=2, head_dim=8, mlp_dim=32, backend="sdpa")
    seq = torch.randn(3, 5, 16)
    # reference: run every block on the full sequence (no last-block shortcut)
    x = torch.cat([seq, pool.token.expand(3, 1, -1)], dim=1) + pool.pos_embedding
    for block in pool.blocks:
        x = block(x)
    torch.testing.assert_close(pool(seq), x[:, 0], rtol=1e-5, atol=1e-6)
    pool.readout = "token"
    torch.testing.assert_close(pool(seq), x[:, -1], rtol=1e-5, atol=1e-6)


def test_sdpa_and_math_attention_agree() -> None:
    cfg = dataclasses.replace(autoencoder_preset("debug"), frames=4)
    video = _video(cfg, batch=1)
    outputs, grads = [], []
    for backend in ("sdpa", "math"):
        model = _model(dataclasses.replace(cfg, attention=backend))
        out = model(video)
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append(model.encoder.blocks[0].time_attn.qkv.weight.grad)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    cfg = dataclasses.replace(autoencoder_preset("debug"), frames=4)
    video = _video(cfg, batch=1)
    results = []
    for checkpointing in (False, True):
        model = _model(dataclasses.replace(cfg, gradient_checkpointing=checkpointing))
        model(video).abs().mean().backward()
        results.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-7, msg=k)


def test_norms_run_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8) * 5 + 3
    ln, gn = LayerNorm32(8), GroupNorm32(64)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2), gn.bias.uniform_(-1, 1)
    xb = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ln_b, gn_b, ln_f = ln(xb), gn(xb), ln(x)
    assert ln_b.dtype == gn_b.dtype == torch.bfloat16 and ln_f.dtype == torch.float32
    expected_ln = F.layer_norm(xb.float(), (8,), ln.weight, ln.bias).bfloat16()
    expected_gn = F.group_norm(xb.float(), 32, gn.weight, gn.bias).bfloat16()
    assert torch.equal(ln_b, expected_ln) and torch.equal(gn_b, expected_gn)
    torch.testing.assert_close(ln_f, F.layer_norm(x, (8,), ln.weight, ln.bias))


def test_bf16_autocast_forward_and_backward() -> None:
    cfg = dataclasses.replace(autoencoder_preset("debug"), frames=4)
    model = _model(cfg)
    video = _video(cfg, batch=1)
    reference = model(video).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16
    rel = (out.float() - reference).norm() / reference.norm()
    assert rel < 0.03, rel
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(AUTOENCODER_PRESETS))
def test_presets_round_trip_through_config_files(tmp_path, name: str) -> None:
    from pvdm.config import load_config, save_config

    cfg = autoencoder_preset(name)
    assert load_config(AutoencoderConfig, save_config(cfg, tmp_path / "ae.yaml")) == cfg
