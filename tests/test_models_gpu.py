"""CUDA checks: the same numbers as on CPU, and the GPU memory target. Skipped without CUDA."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pvdm.models import (
    LatentShape,
    TriplaneAutoencoder,
    TriplaneUNet,
    autoencoder_preset,
    randn_latent,
    unet_preset,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    # compare float32 with float32: TF32 convolutions/matmuls would dominate the difference
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_debug_models_match_cpu() -> None:
    torch.manual_seed(0)
    ae = TriplaneAutoencoder(autoencoder_preset("debug")).eval()
    unet = TriplaneUNet(unet_preset("debug")).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.05)
    video = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    t = torch.tensor([10, 900])
    with torch.no_grad():
        z_cpu = ae.encode(video)
        eps_cpu = unet(z_cpu, t, cond=z_cpu).pack()
        ae, unet = ae.cuda(), unet.cuda()
        z = ae.encode(video.cuda())
        eps = unet(z, t.cuda(), cond=z).pack().cpu()
    torch.testing.assert_close(z.pack().cpu(), z_cpu.pack(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eps, eps_cpu, rtol=1e-4, atol=1e-5)


def test_official_autoencoder_bf16_checkpointed_fits_in_8_gb() -> None:
    cfg = dataclasses.replace(autoencoder_preset("official"), gradient_checkpointing=True)
    model = TriplaneAutoencoder(cfg).cuda()
    video = torch.rand(1, 3, 16, 256, 256, device="cuda") * 2 - 1
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = (model(video).float() - video).abs().mean()
    loss.backward()
    peak_gb = torch.cuda.max_memory_allocated() / 1e9
    assert peak_gb < 8, peak_gb


def test_official_unet_bf16_forward_backward() -> None:
    model = TriplaneUNet(unet_preset("official")).cuda()
    x = randn_latent(2, LatentShape(4, 16, 32, 32), device="cuda")
    t = torch.tensor([1, 999], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eps = model(x, t, cond=x)
    eps.pack().float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
