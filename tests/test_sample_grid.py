"""benchmarks/sample_grid.py: one block of rows per model, every frame, the same seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sample_grid.py"


def test_sample_grid_draws_a_block_per_model_with_the_same_seeds(tmp_path) -> None:
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug"))  # 32 x 32
    PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae).save_pretrained(tmp_path / "pipe")
    spec = importlib.util.spec_from_file_location("sample_grid", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "grid.png"
    model = f"a title={tmp_path / 'pipe'}"
    argv = ["--out", str(out), "--model", model, "--model", model, "--num", "2", "--frames", "3"]
    assert module.main([*argv, "--steps", "2"]) == 0
    with Image.open(out) as img:
        assert img.size == (3 * 34, 2 * (18 + 2 * 34))
        pixels = torch.tensor(list(img.convert("RGB").getdata())).reshape(img.height, img.width, 3)
    first, second = pixels[18 : 18 + 68], pixels[18 + 68 + 18 :]
    assert torch.equal(first, second)  # the same model and seeds give the same block
    assert not torch.equal(first[:32, :32], first[34:66, :32])  # two videos differ
