"""The steps that benchmarks/throughput.py and benchmarks/gpu_check.py time and count FLOPs of.

Each builder returns a `Step`: a closure that runs one step on inputs made once (random videos
or latents of the right shape; data loading is not part of a step), the samples it processes,
and a description. The training steps are the loops' own (`pvdm.train.autoencoder`,
`pvdm.train.diffusion`) without data loading, learning-rate schedule, EMA and logging: the same
model, loss (`AutoencoderLoss` with the pre-tanh hinge; `diffusion_loss` with Min-SNR weights
when the run config has them), autocast precision, gradient accumulation, gradient clipping and
AdamW update (`GuardedUpdate`). LPIPS, when a run config turns it on, is the real network with
random weights (the cost of the pretrained one, no weight files needed).

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`: matrix multiplies, convolutions and
scaled-dot-product attention (a multiply-add counts 2), forward and backward. Elementwise work
(normalisation, activations, the loss, the optimizer update) is not counted. PyTorch's table
misses the CPU attention kernels; `CPU_SDPA_FLOPS` adds them with its own SDPA formulas.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils import flop_counter

ROOT = Path(__file__).resolve().parents[1]


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


_aten = torch.ops.aten
CPU_SDPA_FLOPS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}
FLOPS_COUNTED = (
    "torch.utils.flop_counter.FlopCounterMode: matmul (mm, addmm, bmm, baddbmm), convolution "
    "and scaled-dot-product attention FLOPs (CPU attention kernels added with PyTorch's SDPA "
    "formulas), forward and backward, a multiply-add = 2 FLOPs; elementwise ops, "
    "normalisation, activations, losses and the optimizer update are not counted"
)


@dataclass
class Step:
    """One timed unit of work: `fn()` runs it once on `samples` samples."""

    name: str
    fn: Callable[[], Any]
    samples: int
    info: dict[str, Any] = field(default_factory=dict)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (see FLOPS_COUNTED)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        fn()
    return int(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(
    fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device
) -> list[float]:
    """Seconds of each of `repeats` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- peak: one large matmul, one large convolution ------------------------------------------


def matmul_step(n: int, dtype: torch.dtype, device: torch.device) -> Step:
    """C = A @ B with n x n operands: 2 n^3 FLOPs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    info = {
        "shape": [n, n, n],
        "dtype": str(dtype).removeprefix("torch."),
        "flops_formula": 2 * n**3,
    }
    return Step(f"peak-matmul-{n}", lambda: torch.mm(a, b, out=out), 1, info)


def conv_step(
    batch: int, channels: int, side: int, dtype: torch.dtype, device: torch.device
) -> Step:
    """A 3 x 3 conv2d (padding 1), channels -> channels: 2 * B * C * C * 9 * side^2 FLOPs."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, dtype)
    x = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
    info = {
        "shape": [batch, channels, channels, 3, 3, side, side],
        "dtype": str(dtype).removeprefix("torch."),
        "flops_formula": 2 * batch * channels * channels * 9 * side * side,
    }

    def fn() -> None:
        with torch.no_grad():
            conv(x)

    return Step(f"peak-conv2d-b{batch}-c{channels}-{side}", fn, batch, info)


# ---- training and sampling steps ------------------------------------------------------------


class _NoMonitor:
    def add(self, *args: Any, **kwargs: Any) -> None:
        pass


def autoencoder_train_step(
    cfg: Any,
    device: torch.device,
    batch: int | None = None,
    name: str = "ae-train",
    compile: bool = False,
) -> Step:
    """One optimizer step of `train_autoencoder` (phase 1) for an `AutoencoderRunConfig`;
    `compile`: the network through `torch.compile` (the first call compiles)."""
    from pvdm.models.autoencoder import TriplaneAutoencoder
    from pvdm.models.lpips import LPIPS
    from pvdm.runtime import autocast
    from pvdm.train.ae_loss import AutoencoderLoss, PreTanhProbe
    from pvdm.train.common import GuardedUpdate, make_scaler

    tc = cfg.train
    batch = batch or tc.batch_size
    torch.manual_seed(0)
    model = TriplaneAutoencoder(cfg.model).to(device).train()
    if compile:
        model.compile()
    lpips = LPIPS() if cfg.loss.perceptual_weight > 0 else None  # random weights, same cost
    loss_fn = AutoencoderLoss(cfg.loss, lpips).to(device)
    probe = PreTanhProbe(model, cfg.loss)
    opt = torch.optim.AdamW(
        model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    scaler = make_scaler(tc.precision, device)
    update = GuardedUpdate(tc.max_nonfinite, Path("."), "")
    params = list(model.parameters())
    m = cfg.model
    x = torch.rand(batch, 3, m.frames, m.resolution, m.resolution, device=device) * 2 - 1

    def fn() -> None:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(tc.grad_accum):
            with autocast(tc.precision, device):
                xrec = model(x)
                loss, _ = loss_fn.generator_loss(x, xrec, gan=False)
                hinge = probe.penalty()
                if hinge is not None:
                    loss = loss + hinge
            scaler.scale(loss / tc.grad_accum).backward()
            total += loss.item() / tc.grad_accum
        update(opt, scaler, params, tc.grad_clip, total, 0, _NoMonitor())

    info = {
        "batch": batch,
        "grad_accum": tc.grad_accum,
        "precision": tc.precision,
        "video": [3, m.frames, m.resolution, m.resolution],
        "gradient_checkpointing": m.gradient_checkpointing,
        "lpips": lpips is not None,
        "latent_hinge": cfg.loss.latent_hinge,
        "parameters": sum(p.numel() for p in params),
        "compiled": compile,
    }
    return Step(name, fn, batch * tc.grad_accum, info)


def diffusion_train_step(
    cfg: Any,
    latent_shape: Any,
    device: torch.device,
    batch: int | None = None,
    name: str = "dm-train",
    compile: bool = False,
) -> Step:
    """One optimizer step of `train_diffusion` on latents of `latent_shape` (cached-latent path);
    `compile`: the network through `torch.compile` (the first call compiles)."""
    from pvdm.diffusion.schedule import NoiseSchedule, diffusion_loss
    from pvdm.models import TriplaneUNet, randn_latent
    from pvdm.runtime import autocast
    from pvdm.train.common import GuardedUpdate, make_scaler

    tc, dc = cfg.train, cfg.diffusion
    batch = batch or tc.batch_size
    torch.manual_seed(0)
    unet = TriplaneUNet(cfg.model).to(device).train()
    if compile:
        unet.compile()
    schedule = NoiseSchedule.from_config(dc)
    opt = torch.optim.AdamW(
        unet.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    scaler = make_scaler(tc.precision, device)
    update = GuardedUpdate(tc.max_nonfinite, Path("."), "")
    params = list(unet.parameters())
    z = randn_latent(batch, latent_shape, device=device).map(torch.tanh)  # autoencoder range
    prev = randn_latent(batch, latent_shape, device=device).map(torch.tanh)
    labels = torch.zeros(batch, dtype=torch.long, device=device) if cfg.model.num_classes else None

    def fn() -> None:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(tc.grad_accum):
            # conditional or not costs the same: the UNet concatenates zeros when unconditional
            c = prev if bool(torch.rand(()) < dc.cond_prob) else None
            t = torch.randint(0, schedule.num_timesteps, (batch,), device=device)
            noise = z.randn_like()
            xt = schedule.q_sample(z, t, noise)
            with autocast(tc.precision, device):
                eps = unet(xt, t, cond=c, labels=labels)
                weights = (
                    schedule.min_snr_weights(t, dc.min_snr_gamma) if dc.min_snr_gamma else None
                )
                loss = diffusion_loss(eps, noise, dc.loss, weights)
            scaler.scale(loss / tc.grad_accum).backward()
            total += loss.item() / tc.grad_accum
        update(opt, scaler, params, tc.grad_clip, total, 0, _NoMonitor())

    info = {
        "batch": batch,
        "grad_accum": tc.grad_accum,
        "precision": tc.precision,
        "latent_shape": list(latent_shape),
        "min_snr_gamma": dc.min_snr_gamma,
        "parameters": sum(p.numel() for p in params),
        "compiled": compile,
    }
    return Step(name, fn, batch * tc.grad_accum, info)


def unet_forward_step(
    unet_cfg: Any, latent_shape: Any, batch: int, device: torch.device, name: str = "sample"
) -> Step:
    """One denoiser call of a sampler: a UNet forward without gradients (first clip: no cond)."""
    from pvdm.models import TriplaneUNet, randn_latent

    torch.manual_seed(0)
    unet = TriplaneUNet(unet_cfg).to(device).eval()
    x = randn_latent(batch, latent_shape, device=device)
    t = torch.full((batch,), 500, device=device)

    def fn() -> None:
        with torch.no_grad():
            unet(x, t).float()

    info = {"batch": batch, "latent_shape": list(latent_shape), "precision": "fp32"}
    return Step(name, fn, batch, info)


def latent_shape(ae_cfg: Any) -> Any:
    """The latent shape of an autoencoder config (built on the meta device: no memory, no time)."""
    from pvdm.models import TriplaneAutoencoder

    with torch.device("meta"):
        return TriplaneAutoencoder(ae_cfg).latent_shape()


def forward_backward_step(
    kind: str,
    cfg: Any,
    batch: int,
    device: torch.device,
    precision: str,
    name: str,
    latent: Any = None,
) -> Step:
    """Network forward + backward without the optimizer (benchmarks/models.py's train phase).

    `kind` is "autoencoder" (input: random videos) or "unet" (input: latents of shape `latent`,
    conditioned on themselves)."""
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, randn_latent
    from pvdm.runtime import autocast

    torch.manual_seed(0)
    if kind == "autoencoder":
        model = TriplaneAutoencoder(cfg).to(device)
        video = torch.rand(batch, 3, cfg.frames, cfg.resolution, cfg.resolution, device=device)
        video = video * 2 - 1

        def loss() -> torch.Tensor:
            return (model(video).float() - video).abs().mean()

        shape: list[int] = [3, cfg.frames, cfg.resolution, cfg.resolution]
    else:
        model = TriplaneUNet(cfg).to(device)
        x = randn_latent(batch, latent, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)

        def loss() -> torch.Tensor:
            return model(x, t, cond=x).pack().float().square().mean()

        shape = list(latent)

    def fn() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(precision, device):
            value = loss()
        value.backward()

    info = {
        "batch": batch,
        "precision": precision,
        "input": shape,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return Step(name, fn, batch, info)
