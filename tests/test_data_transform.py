"""The official crop + bilinear resize, and the uint8 <-> [-1, 1] maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvdm.data import center_crop_resize, from_model_range, to_model_range


def reference(frames: np.ndarray, size: int) -> np.ndarray:
    """Float64 centre square crop + bilinear resize (half-pixel centres, edge clamp), [C,T,H,W]."""
    _, h, w, _ = frames.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = frames[:, top : top + side, left : left + side].astype(np.float64)
    scale = side / size
    src = np.maximum((np.arange(size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), side - 1)
    i1 = np.minimum(i0 + 1, side - 1)
    frac = src - i0
    rows = x[:, i0] * (1 - frac)[None, :, None, None] + x[:, i1] * frac[None, :, None, None]
    out = (
        rows[:, :, i0] * (1 - frac)[None, None, :, None]
        + rows[:, :, i1] * frac[None, None, :, None]
    )
    return out.transpose(3, 0, 1, 2)


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(240, 320, 256), (320, 240, 64), (37, 53, 64), (180, 320, 128), (96, 96, 96), (255, 129, 33)],
)
def test_matches_float_reference_up_to_rounding(height, width, size) -> None:
    rng = np.random.default_rng(height * 1000 + width)
    frames = rng.integers(0, 256, size=(3, height, width, 3), dtype=np.uint8)
    out = center_crop_resize(frames, size)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, size, size)
    ref = reference(frames, size)
    assert np.abs(out.numpy().astype(np.float64) - ref).max() <= 0.5 + 1e-3


def test_crop_is_centred_like_the_official_code() -> None:
    frames = np.zeros((1, 4, 9, 3), dtype=np.uint8)
    frames[:, :, 2:6] = 200  # (9 - 4) // 2 = 2: the crop keeps columns 2..5
    out = center_crop_resize(frames, 4)
    assert (out == 200).all()
    tall = np.zeros((1, 7, 2, 3), dtype=np.uint8)
    tall[:, 2:4] = 50  # (7 - 2) // 2 = 2: rows 2..3
    assert (center_crop_resize(tall, 2) == 50).all()


def test_same_size_is_identity_and_bad_input_rejected() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(center_crop_resize(frames, 16).permute(1, 2, 3, 0), frames)
    with pytest.raises(ValueError, match="uint8"):
        center_crop_resize(frames.astype(np.float32), 8)


def test_model_range_maps() -> None:
    u = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8)
    x = to_model_range(u)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, u.double().div(127.5).sub(1).float())
    assert x[0] == -1 and x[-1] == 1
    # Official decode truncates: 0.999 -> 254.87 -> 254; values outside [-1, 1] are clamped.
    y = from_model_range(torch.tensor([-3.0, -1.0, 0.0, 0.999, 1.0, 7.0]))
    assert y.tolist() == [0, 0, 127, 254, 255, 255]
    back = from_model_range(to_model_range(torch.arange(256, dtype=torch.uint8)))
    diff = back.int() - torch.arange(256)
    assert set(diff.tolist()) <= {-1, 0}  # truncation can lose 1 where float error lands below
