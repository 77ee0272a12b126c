"""`pvdm data inspect` and `pvdm data preview` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import shared
from einops import rearrange
from PIL import Image

from pvdm.cli import main
from pvdm.data import DataConfig, make_loader, open_dataset
from pvdm.data.decode import decode_all, probe


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDM_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("args", [["data"], ["data", "inspect"], ["data", "preview"]])
def test_help(args, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    assert "usage: pvdm data" in capsys.readouterr().out


def test_inspect_sky(capsys) -> None:
    root = shared("sky_mini")
    assert main(["data", "inspect", str(root), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "layout:   sky (split test)" in out
    assert "8 usable, 0 skipped" in out and "32 per video" in out and "128 x 128" in out


def test_inspect_ucf_json(capsys) -> None:
    root = shared("ucf_mini")
    assert main(["data", "inspect", str(root), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "ucf101" and report["usable"] == 2 and report["classes"] == 2
    assert report["frames"] == [79, 164] and report["fold"] == 1


def test_inspect_without_usable_video_fails(tmp_path, capsys) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.webm").write_bytes(b"junk" * 99)
    assert main(["data", "inspect", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "0 usable, 2 skipped" in captured.out and "empty file (0 bytes)" in captured.out
    assert "pvdm: error: no usable video" in captured.err


def test_preview_synthetic_gif_and_mp4(tmp_path) -> None:
    gif = tmp_path / "p.gif"
    assert main(["data", "preview", "synthetic", "--out", str(gif), "--num", "4",
                 "--frames", "8", "--resolution", "32"]) == 0  # fmt: skip
    assert probe(gif).num_frames == 8
    assert Image.open(gif).size == (2 * 32 + 2, 2 * 32 + 2)
    mp4 = tmp_path / "p.mp4"
    assert main(["data", "preview", "synthetic", "--out", str(mp4), "--num", "1",
                 "--frames", "12", "--resolution", "48"]) == 0  # fmt: skip
    assert decode_all(mp4).shape == (12, 48, 48, 3)


def test_preview_png_equals_the_training_loader(tmp_path) -> None:
    root = shared("ucf_mini")
    out = tmp_path / "ucf.png"
    args = ["--split", "all", "--num", "3", "--frames", "4", "--resolution", "24", "--seed", "5"]
    assert main(["data", "preview", str(root), "--out", str(out), *args]) == 0
    grid = np.asarray(Image.open(out).convert("RGB"))
    cfg = DataConfig(path=str(root), split="all", resolution=24, frames=4)
    batch = next(iter(make_loader(open_dataset(cfg), batch_size=3, seed=5, num_workers=0)))
    frames = rearrange(batch["video"], "b c t h w -> b t h w c").numpy()
    assert grid.shape == (3 * 26 - 2, 4 * 26 - 2, 3)
    for b in range(3):
        for t in range(4):
            cell = grid[b * 26 : b * 26 + 24, t * 26 : t * 26 + 24]
            np.testing.assert_array_equal(cell, frames[b, t])


def test_preview_errors(tmp_path, capsys) -> None:
    assert main(["data", "preview", "synthetic", "--out", str(tmp_path / "x.avi")]) == 2
    assert "must end in .gif, .mp4 or .png" in capsys.readouterr().err
    assert main(["data", "preview", str(tmp_path / "nope"), "--out", str(tmp_path / "x.gif")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "preview", "synthetic", "--out", str(tmp_path / "x.gif"),
                 "--frames", "0"]) == 2  # fmt: skip
    assert "--frames must be positive" in capsys.readouterr().err
    long = tmp_path / "long.gif"  # longer than the default synthetic videos: they grow
    assert main(["data", "preview", "synthetic", "--out", str(long), "--frames", "70",
                 "--num", "1", "--resolution", "16"]) == 0  # fmt: skip
    assert probe(long).num_frames == 70
