"""PVDM's latent diffusion: noise schedule and loss, samplers, latent cache and the pipeline."""

from pvdm.diffusion.pipeline import PVDMPipeline
from pvdm.diffusion.samplers import (
    DEFAULT_ETA,
    SAMPLERS,
    SamplerSpec,
    ddim_sample,
    ddpm_sample,
    dpm_solver_sample,
    make_denoiser,
)
from pvdm.diffusion.sampling import DEFAULT_SAMPLER, SamplingConfig
from pvdm.diffusion.schedule import DiffusionConfig, NoiseSchedule, diffusion_loss

__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "DiffusionConfig",
    "NoiseSchedule",
    "PVDMPipeline",
    "SamplerSpec",
    "SamplingConfig",
    "ddim_sample",
    "ddpm_sample",
    "diffusion_loss",
    "dpm_solver_sample",
    "make_denoiser",
]
