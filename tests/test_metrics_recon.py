"""Reconstruction metrics: PSNR (official formula), SSIM (Wang et al.) and the per-video LPIPS wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from pvdm.data import to_model_range
from pvdm.metrics import lpips_video, psnr, psnr_uint8, ssim, ssim_uint8
from pvdm.metrics.recon import gaussian_window


def _videos(seed: int, shape=(2, 3, 4, 24, 20)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_psnr_known_answers() -> None:
    x = torch.zeros(2, 3, 2, 8, 8)
    x_hat = x.clone()
    x_hat[0] += 0.2  # [0, 1]-scale error 0.1: mse 1e-2, 20 dB
    x_hat[1] -= 0.02  # 0.01: mse 1e-4, 40 dB
    per_video = psnr(x, x_hat, reduction="none")
    torch.testing.assert_close(per_video, torch.tensor([20.0, 40.0], dtype=torch.float64))
    assert psnr(x, x_hat).item() == pytest.approx(30.0)  # averaged over videos, not pixels
    assert psnr(x, x).item() == math.inf  # as in the official code


def test_psnr_uint8_equals_psnr_on_model_range() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 3, 2, 8, 8), generator=gen, dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 3, 2, 8, 8), generator=gen, dtype=torch.uint8)
    torch.testing.assert_close(
        psnr_uint8(a, b, reduction="none"), psnr(to_model_range(a), to_model_range(b), "none")
    )
    c = torch.full((1, 3, 1, 4, 4), 100, dtype=torch.uint8)
    assert psnr_uint8(c, c + 51).item() == pytest.approx(-10 * math.log10(0.2**2))


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Wang et al. per 2-D image with scipy: Gaussian 11x11 (sigma 1.5), valid region."""
    g = gaussian_window().numpy()

    def blur(z):
        z = scipy.ndimage.correlate1d(z, g, axis=0, mode="constant")
        z = scipy.ndimage.correlate1d(z, g, axis=1, mode="constant")
        return z[5:-5, 5:-5]  # drop every position whose window leaves the image

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_matches_scipy_reference() -> None:
    x = _videos(1)
    y = (x + 0.3 * _videos(2)).clamp(-1, 1)
    per_video = ssim(x, y, reduction="none")
    x01, y01 = ((x.double() + 1) / 2).numpy(), ((y.double() + 1) / 2).numpy()
    for b in range(2):
        ref = np.mean(
            [_ssim_reference(x01[b, c, t], y01[b, c, t], 1.0) for c in range(3) for t in range(4)]
        )
        assert per_video[b].item() == pytest.approx(ref, rel=1e-10)


def test_ssim_known_values() -> None:
    x = _videos(3)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    # Constant frames a, b on [0, 1]: only the luminance term is left, (2ab + C1)/(a^2+b^2+C1).
    a, b = 0.25, 0.75
    c1 = 0.01**2
    xa = torch.full((1, 3, 2, 16, 16), 2 * a - 1)
    xb = torch.full((1, 3, 2, 16, 16), 2 * b - 1)
    assert ssim(xa, xb).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    noisy = [(x + s * _videos(4)).clamp(-1, 1) for s in (0.05, 0.2, 0.8)]
    scores = [ssim(x, n).item() for n in noisy]
    assert 1 > scores[0] > scores[1] > scores[2]


def test_ssim_uint8_equals_ssim_on_unit_scale() -> None:
    gen = torch.Generator().manual_seed(5)
    a = torch.randint(0, 256, (2, 3, 2, 16, 16), generator=gen, dtype=torch.uint8)
    b = (a.int() + torch.randint(-20, 21, a.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    torch.testing.assert_close(
        ssim_uint8(a, b, "none"), ssim(to_model_range(a), to_model_range(b), "none")
    )


def test_shape_and_range_errors() -> None:
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 9))
    with pytest.raises(ValueError, match="uint8"):
        psnr_uint8(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="reduction"):
        psnr(torch.zeros(1, 3, 2, 8, 8), torch.ones(1, 3, 2, 8, 8), reduction="sum")


class _MeanAbs(torch.nn.Module):
    """Stand-in image distance: mean |x - y| per image."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().flatten(1).mean(1)


def test_lpips_video_averages_frames_per_video() -> None:
    x, y = _videos(6), _videos(7)
    per_video = lpips_video(_MeanAbs(), x, y, reduction="none", frames_per_batch=3)
    expected = (x - y).abs().mean(dim=(1, 3, 4)).mean(dim=1)  # frames averaged per video
    torch.testing.assert_close(per_video, expected)
    torch.testing.assert_close(lpips_video(_MeanAbs(), x, y), expected.mean())
