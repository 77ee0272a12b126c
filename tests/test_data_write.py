"""Writing mp4, GIF and PNG grids: files decode back with the right frames, sizes and values."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from data_helpers import real_frames
from einops import rearrange
from PIL import Image

from pvdm.data import tile_videos, write_video
from pvdm.data.decode import decode_all, probe


def _videos(count: int, frames: int, height: int, width: int) -> torch.Tensor:
    src = real_frames()
    clips = [src[i : i + frames, i : i + height, i : i + width] for i in range(count)]
    return rearrange(torch.from_numpy(np.stack(clips)), "b t h w c -> b c t h w")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = max(np.mean((a.astype(np.float64) - b) ** 2), 1e-10)
    return 10 * np.log10(255**2 / mse)


def test_mp4_round_trip_odd_size(tmp_path) -> None:
    video = _videos(1, 12, 33, 47)[0]  # [C, T, H, W], odd sizes
    path = write_video(tmp_path / "out" / "v.mp4", video, fps=10)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == 10
    back = decode_all(path)
    assert back.shape == (12, 34, 48, 3)  # padded to even
    assert _psnr(back[:, :33, :47], rearrange(video, "c t h w -> t h w c").numpy()) > 30
    assert [p.name for p in path.parent.iterdir()] == ["v.mp4"]  # no temporary files left


def test_gif_round_trip_grid_and_loop(tmp_path) -> None:
    video = _videos(3, 6, 20, 24)
    path = write_video(tmp_path / "v.gif", video, fps=5)
    assert probe(path).num_frames == 6
    with Image.open(path) as img:
        assert img.info["loop"] == 0 and img.info["duration"] == 200
        assert img.size == (2 * 24 + 2, 2 * 20 + 2)  # 3 videos -> 2 x 2 grid, 2-pixel gaps
    back = decode_all(path)
    expected = tile_videos(video)
    assert back.shape == expected.shape and _psnr(back, expected) > 25


def test_png_grid_is_exact(tmp_path) -> None:
    video = _videos(2, 8, 16, 20)
    path = write_video(tmp_path / "grid.png", video, every=3)
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape == (2 * 16 + 2, 3 * 20 + 2 * 2, 3)  # columns: frames 0, 3, 6
    frames = rearrange(video, "b c t h w -> b t h w c").numpy()
    for b in range(2):
        for col, t in enumerate((0, 3, 6)):
            cell = grid[b * 18 : b * 18 + 16, col * 22 : col * 22 + 20]
            np.testing.assert_array_equal(cell, frames[b, t])


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="from_model_range"):
        write_video("x.mp4", torch.zeros(3, 2, 8, 8))
    with pytest.raises(ValueError, match=r"\.mp4, \.gif, \.mkv or \.png"):
        write_video("x.avi", torch.zeros(3, 2, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected a video"):
        write_video("x.png", torch.zeros(8, 8, dtype=torch.uint8))
