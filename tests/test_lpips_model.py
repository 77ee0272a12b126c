"""LPIPS (official VGG variant): a random torchvision-format backbone with the real v0.1 linear heads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pvdm.errors import CheckpointError, WeightsError
from pvdm.models.lpips import LPIPS
from pvdm.models.vgg import VGG16Features, load_vgg16_features
from pvdm.weights import KNOWN_WEIGHTS, file_sha256

LIN_FILE = Path(__file__).resolve().parents[1].parent / "shared/weights/lpips/v0.1_vgg.pth"
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOL_BEFORE = (5, 10, 17, 24)  # the conv indices that follow a max pool
TAP_AFTER = (2, 7, 14, 21, 28)  # relu1_2 ... relu5_3 follow these convs


def random_vgg16_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision `vgg16-397923af.pth`-format state dict with random (He) weights."""
    gen = torch.Generator().manual_seed(seed)
    state, c_in = {}, 3
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    for idx, c_out in zip(CONV_INDICES, widths):
        std = math.sqrt(2.0 / (c_in * 9))
        state[f"features.{idx}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=gen) * std
        state[f"features.{idx}.bias"] = torch.randn(c_out, generator=gen) * 0.01
        c_in = c_out
    state["classifier.6.weight"] = torch.zeros(1000, 4)  # ignored (real shape 1000x4096)
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


@pytest.fixture(scope="module")
def lin_state() -> dict[str, torch.Tensor]:
    if not LIN_FILE.is_file():
        pytest.skip(f"LPIPS linear weights {LIN_FILE} are absent")
    # The file was saved from a CUDA tensor: map it to the CPU.
    return torch.load(LIN_FILE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, torch.Tensor]:
    return random_vgg16_state()


@pytest.fixture(scope="module")
def lpips(vgg_state, lin_state) -> LPIPS:
    return LPIPS.from_state_dicts(vgg_state, lin_state)


def hand_vgg_taps(state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """The five LPIPS taps by a plain conv stack built from the state dict."""
    taps = []
    for idx in CONV_INDICES:
        if idx in POOL_BEFORE:
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(
            F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], 1, 1)
        )
        if idx in TAP_AFTER:
            taps.append(x)
    return taps


def _images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_vgg_features_match_hand_built_conv_stack(vgg_state) -> None:
    net = VGG16Features()
    load_vgg16_features(net, vgg_state)
    x = _images(0)
    with torch.no_grad():
        for ours, ref in zip(net(x), hand_vgg_taps(vgg_state, x), strict=True):
            torch.testing.assert_close(ours, ref)


def test_lpips_known_answer_by_hand(lpips, vgg_state, lin_state) -> None:
    x, y = _images(1), _images(2)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx = hand_vgg_taps(vgg_state, (x - shift) / scale)
    fy = hand_vgg_taps(vgg_state, (y - shift) / scale)
    expected = torch.zeros(2)
    for i, (a, b) in enumerate(zip(fx, fy)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weighted = F.conv2d((a - b) ** 2, lin_state[f"lin{i}.model.1.weight"])  # [N, 1, h, w]
        expected += weighted.mean(dim=(1, 2, 3))
    with torch.no_grad():
        got = lpips(x, y)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert torch.all(got > 0)


def test_lpips_identity_symmetry_and_ordering(lpips) -> None:
    x = _images(3)
    with torch.no_grad():
        assert torch.all(lpips(x, x) == 0)
        y = _images(4)
        torch.testing.assert_close(lpips(x, y), lpips(y, x))
        near = lpips(x, (x + 0.05 * _images(5)).clamp(-1, 1))
        far = lpips(x, (x + 0.5 * _images(5)).clamp(-1, 1))
    assert torch.all(near > 0) and torch.all(far > near)


def test_lpips_is_a_frozen_loss_with_input_gradients(lpips) -> None:
    lpips.train()
    assert not lpips.training and not any(m.training for m in lpips.modules())
    assert not any(p.requires_grad for p in lpips.parameters())
    x, y = _images(6, size=32), _images(7, size=32)
    with torch.no_grad():
        metric = lpips(x, y)  # one batched pass
    x.requires_grad_(True)
    loss = lpips(x, y)  # separate passes, graph through x only
    torch.testing.assert_close(loss.detach(), metric)
    loss.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lpips_under_bf16_autocast_is_close(lpips) -> None:
    x, y = _images(8, size=16), _images(9, size=16)
    with torch.no_grad():
        ref = lpips(x, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = lpips(x, y)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=5e-2, atol=0)


def test_from_files_and_errors(tmp_path, vgg_state, lin_state, lpips) -> None:
    vgg_path = tmp_path / "vgg16-397923af.pth"
    torch.save(vgg_state, vgg_path)
    model = LPIPS.from_files(vgg_path, LIN_FILE)
    x, y = _images(10, size=32), _images(11, size=32)
    with torch.no_grad():
        torch.testing.assert_close(model(x, y), lpips(x, y))
    with pytest.raises(WeightsError, match=r"missing_vgg\.pth"):
        LPIPS.from_files(tmp_path / "missing_vgg.pth", LIN_FILE)
    with pytest.raises(CheckpointError, match=r"lin3\.model\.1\.weight"):
        LPIPS.from_state_dicts(vgg_state, {k: v for k, v in lin_state.items() if "lin3" not in k})
    with pytest.raises(CheckpointError, match="VGG16"):
        LPIPS.from_state_dicts({"features.0.weight": torch.zeros(64, 3, 3, 3)}, lin_state)


def test_known_lpips_checksum_is_the_shared_file() -> None:
    if not LIN_FILE.is_file():
        pytest.skip(f"LPIPS linear weights {LIN_FILE} are absent")
    assert file_sha256(LIN_FILE) == KNOWN_WEIGHTS["lpips_vgg"].sha256
