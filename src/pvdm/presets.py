"""Named run settings: one function per preset, for each training stage.

`debug` is tiny (32 x 32, 8 frames) for tests and the CPU demo. The paper presets follow the
official recipe (spec sections 2, 3 and 9); counts are optimizer steps:
- autoencoder phase 1 (`ucf101-256`, `sky-256`): L1 + LPIPS, global batch 8 with 3 accumulation
  micro-batches (the paper's effective 24), AdamW 1e-4 betas (0.5, 0.9); about 250k official
  micro-iterations = 85k steps. Phase 2 (`*-gan`): the discriminators on from the first step,
  about 14k micro-iterations = 5k steps, with the held-out guard instead of manual early stopping.
- diffusion (`ucf101-256`, `sky-256`): global batch 64, AdamW 1e-4 constant, EMA 0.9999 every
  25 steps, fp32 like the official trainer, cond_prob 0.3 (UCF-101) / 0.2 (Sky).
The debug presets depart from the official recipe to learn fast on a CPU (docs/training.md,
"The demo recipe"): higher learning rates with warm-up, gradient clipping and a linear decay
to 0 over the second half of the run, betas (0.9, 0.99) for the autoencoder, L1 plus L1 on
neighbouring-pixel differences and a hinge on pre-tanh latent values beyond 1.5, Min-SNR-5
loss weights for the diffusion model, EMA 0.999 every 5 steps, a learned plane embedding in
the UNet (its three latent planes all have the same size) and cond_prob 0.5.
Departures of the paper presets: bf16 autocast for the autoencoder (the official code uses fp16 AMP; bf16 needs no
loss scaling on A100/H100); `precision` can be set back with --set train.precision=fp16.
The paper autoencoder presets turn on activation checkpointing (memory only; same function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pvdm.data import DataConfig
from pvdm.diffusion.schedule import DiffusionConfig
from pvdm.models.autoencoder import autoencoder_preset
from pvdm.models.unet import unet_preset
from pvdm.train.ae_loss import AutoencoderLossConfig
from pvdm.train.autoencoder import AutoencoderRunConfig
from pvdm.train.config import TrainConfig
from pvdm.train.diffusion import DiffusionRunConfig
from pvdm.train.distill import DistillRunConfig, DistillSettings


def _ae_debug() -> AutoencoderRunConfig:
    return AutoencoderRunConfig(
        model=autoencoder_preset("debug"),
        data=DataConfig(path="synthetic", resolution=32, frames=8, num_workers=0),
        train=TrainConfig(
            max_steps=600,
            batch_size=8,
            lr=3e-3,
            warmup_steps=50,
            lr_decay_frac=0.5,
            grad_clip=1.0,
            betas=(0.9, 0.99),
            use_ema=False,
            log_every=25,
            checkpoint_every=200,
            eval_every=100,
            keep_checkpoints=2,
            keep_snapshots=2,
        ),
        # no VGG16 download on a first try-out: no LPIPS (set loss.perceptual_weight=4 to add it),
        # plus L1 on neighbouring-pixel differences, which keeps edges and stripes (rFVD -19%)
        loss=AutoencoderLossConfig(
            perceptual_weight=0.0, latent_hinge=1.0, gradient_weight=4.0, guard_clips=8
        ),
    )


def _ae_paper(layout: str, gan: bool) -> Callable[[], AutoencoderRunConfig]:
    def preset() -> AutoencoderRunConfig:
        return AutoencoderRunConfig(
            # activation checkpointing: same function, 17.2 -> 5.9 GB peak at batch 1 (fp32, CPU)
            model=replace(autoencoder_preset("official"), gradient_checkpointing=True),
            data=DataConfig(path="", layout=layout, resolution=256, frames=16, num_workers=4),
            train=TrainConfig(
                max_steps=5_000 if gan else 85_000,
                batch_size=8,
                grad_accum=3,
                lr=1e-4,
                betas=(0.5, 0.9),
                precision="bf16",
                use_ema=False,
                log_every=50,
                checkpoint_every=500 if gan else 2_000,
                eval_every=500 if gan else 2_000,
            ),
            loss=AutoencoderLossConfig(disc_start=0 if gan else 100_000_000, guard_clips=32),
        )

    return preset


def _dm_debug() -> DiffusionRunConfig:
    return DiffusionRunConfig(
        # the debug latent's three planes are all 8 x 8: without a plane embedding the
        # unconditional model cannot tell content from motion planes (docs/training.md)
        model=replace(unet_preset("debug"), plane_embedding=True),
        data=DataConfig(path="synthetic", resolution=32, frames=8, num_workers=0),
        train=TrainConfig(
            max_steps=1500,
            batch_size=16,
            lr=1e-3,
            warmup_steps=50,
            lr_decay_frac=0.5,
            grad_clip=1.0,
            ema_decay=0.999,
            ema_every=5,
            log_every=50,
            checkpoint_every=500,
            keep_checkpoints=2,
            keep_snapshots=2,
        ),
        diffusion=DiffusionConfig(cond_prob=0.5, min_snr_gamma=5.0),
    )


def _dm_paper(
    layout: str, cond_prob: float, classes: bool = False
) -> Callable[[], DiffusionRunConfig]:
    def preset() -> DiffusionRunConfig:
        model = unet_preset("official")
        if classes:
            model.num_classes = 101
        return DiffusionRunConfig(
            model=model,
            data=DataConfig(path="", layout=layout, resolution=256, frames=16, num_workers=4),
            train=TrainConfig(
                max_steps=850_000,
                batch_size=64,
                lr=1e-4,
                log_every=100,
                checkpoint_every=10_000,
                preview_every=10_000,
            ),
            diffusion=DiffusionConfig(cond_prob=cond_prob),
            preview_sampler="ddim",
            preview_steps=100,
        )

    return preset


AUTOENCODER_RUNS: dict[str, Callable[[], AutoencoderRunConfig]] = {
    "debug": _ae_debug,
    "ucf101-256": _ae_paper("ucf101", gan=False),
    "ucf101-256-gan": _ae_paper("ucf101", gan=True),
    "sky-256": _ae_paper("sky", gan=False),
    "sky-256-gan": _ae_paper("sky", gan=True),
}

DIFFUSION_RUNS: dict[str, Callable[[], DiffusionRunConfig]] = {
    "debug": _dm_debug,
    "ucf101-256": _dm_paper("ucf101", 0.3),
    "sky-256": _dm_paper("sky", 0.2),
    "ucf101-256-classcond": _dm_paper("ucf101", 0.3, classes=True),
}


def _distill_debug() -> DistillRunConfig:
    # a 2-step student of a demo-size model (docs/results.md, "A distilled student")
    return DistillRunConfig(
        train=TrainConfig(
            max_steps=300,
            batch_size=16,
            lr=1e-4,
            grad_clip=1.0,
            use_ema=False,
            log_every=25,
            checkpoint_every=100,
            keep_checkpoints=2,
            keep_snapshots=2,
        ),
        distill=DistillSettings(student_steps=2, fake_updates=2, fake_lr=1e-4),
    )


DISTILL_RUNS: dict[str, Callable[[], DistillRunConfig]] = {"debug": _distill_debug}
