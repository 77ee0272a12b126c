"""TriplaneLatent: exact packing in the official flat order, tensor-like arithmetic."""

from __future__ import annotations

import pytest
import torch

from pvdm.models.latent import LatentShape, TriplaneLatent, randn_latent

B, C, T, H, W = 2, 3, 5, 4, 6


def _planes() -> TriplaneLatent:
    g = torch.Generator().manual_seed(0)
    return TriplaneLatent(
        torch.randn(B, C, H, W, generator=g),
        torch.randn(B, C, T, W, generator=g),
        torch.randn(B, C, T, H, generator=g),
    )


def test_shape_information() -> None:
    z = _planes()
    assert z.batch_size == len(z) == B
    assert z.shape == LatentShape(C, T, H, W)
    assert z.shape.num_tokens == H * W + T * W + T * H


def test_pack_is_the_official_flat_order() -> None:
    # the value at each official flat index, computed by hand from the plane coordinates
    hw = torch.arange(H * W).float().view(1, 1, H, W)  # index h * W + w
    tw = 1000 + torch.arange(T * W).float().view(1, 1, T, W)  # index t * W + w
    th = 2000 + torch.arange(T * H).float().view(1, 1, T, H)  # index t * H + h
    flat = TriplaneLatent(hw, tw, th).pack()
    assert flat.shape == (1, 1, H * W + T * W + T * H)
    assert flat[0, 0, 2 * W + 3].item() == 2 * W + 3  # hw[h=2, w=3]
    assert flat[0, 0, H * W + 4 * W + 1].item() == 1000 + 4 * W + 1  # tw[t=4, w=1]
    assert flat[0, 0, H * W + T * W + 3 * H + 2].item() == 2000 + 3 * H + 2  # th[t=3, h=2]


def test_pack_unpack_round_trips_exactly() -> None:
    z = _planes()
    flat = z.pack()
    back = TriplaneLatent.unpack(flat, z.shape)
    for a, b in zip(z.planes, back.planes):
        assert torch.equal(a, b)


def test_unpack_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="packed latent must be"):
        TriplaneLatent.unpack(torch.zeros(1, C, 10), LatentShape(C, T, H, W))
    with pytest.raises(ValueError, match="packed latent must be"):
        TriplaneLatent.unpack(torch.zeros(1, C + 1, H * W + T * W + T * H), LatentShape(C, T, H, W))


def test_inconsistent_planes_rejected() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        TriplaneLatent(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 3, 5), torch.zeros(1, 2, 3, 4))


def test_arithmetic_matches_packed_tensor_arithmetic() -> None:
    z, y = _planes(), _planes().map(lambda p: p.flip(-1) + 2)
    zp, yp = z.pack(), y.pack()
    per_sample = torch.tensor([0.5, -3.0])
    ps = per_sample.view(B, 1, 1)
    cases = {
        "add": (z + y, zp + yp),
        "sub": (z - y, zp - yp),
        "mul": (z * y, zp * yp),
        "div": (z / y, zp / yp),
        "scalar": (2.0 * z - 1, 2.0 * zp - 1),
        "rsub": (1 - z, 1 - zp),
        "rdiv": (1 / y, 1 / yp),
        "per_sample": (per_sample * z + z / per_sample, ps * zp + zp / ps),
        "neg": (-z, -zp),
        "clamp": (z.clamp(-0.5, 0.5), zp.clamp(-0.5, 0.5)),
        "0-d tensor": (z * torch.tensor(3.0), zp * 3.0),
    }
    for name, (got, expected) in cases.items():
        assert torch.equal(got.pack(), expected), name


def test_arithmetic_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="scalar or a tensor of shape"):
        _ = _planes() * torch.ones(3)


def test_indexing_cat_and_conversions() -> None:
    z = _planes()
    assert z[1].batch_size == 1 and torch.equal(z[1].pack(), z.pack()[1:2])
    assert torch.equal(z[-1].pack(), z.pack()[-1:])
    assert torch.equal(z[0:1].pack(), z.pack()[0:1])
    assert torch.equal(z[torch.tensor([1, 0])].pack(), z.pack()[[1, 0]])
    joined = TriplaneLatent.cat([z[1], z[0]])
    assert torch.equal(joined.pack(), z.pack()[[1, 0]])
    assert z.to(torch.float64).dtype == torch.float64
    assert z.to(torch.float64).float().dtype == torch.float32
    assert torch.equal(z.zeros_like().pack(), torch.zeros_like(z.pack()))
    w = z.map(lambda p: p.requires_grad_()).detach()
    assert not w.hw.requires_grad


def test_randn_like_draws_one_packed_tensor() -> None:
    z = _planes()
    noise = z.randn_like(generator=torch.Generator().manual_seed(7))
    expected = torch.randn(B, C, z.shape.num_tokens, generator=torch.Generator().manual_seed(7))
    assert torch.equal(noise.pack(), expected)
    again = randn_latent(B, z.shape, torch.Generator().manual_seed(7))
    assert torch.equal(again.pack(), expected)


def test_randn_latent_with_one_generator_per_sample_is_batch_independent() -> None:
    shape = LatentShape(C, T, H, W)
    both = randn_latent(2, shape, [torch.Generator().manual_seed(s) for s in (3, 4)])
    second = randn_latent(1, shape, [torch.Generator().manual_seed(4)])
    assert torch.equal(both.pack()[1:], second.pack())
    assert not torch.equal(both.pack()[:1], second.pack())
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn_latent(3, shape, [torch.Generator()] * 2)
