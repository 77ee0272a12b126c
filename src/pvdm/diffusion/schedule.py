"""The noise schedule and training objective of PVDM's latent diffusion (official `losses/ddpm.py`).

Defaults are the official ones: 1000 steps, the LDM "linear" schedule
betas = linspace(sqrt(0.0015), sqrt(0.0195), 1000)^2 computed in float64 and stored as float32,
epsilon prediction, and the L2 loss (mean over channels and positions, then over the batch)
that the official code really uses although its YAML says l1.

Latents are `TriplaneLatent`s (or plain tensors, e.g. in tests); both support the arithmetic
used here, with one coefficient per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from pvdm.errors import ConfigError
from pvdm.models.latent import TriplaneLatent

Latent = TriplaneLatent | torch.Tensor


@dataclass
class DiffusionConfig:
    """The diffusion process and the joint unconditional / frame-conditional training recipe."""

    num_timesteps: int = 1000
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    loss: Literal["l2", "l1"] = "l2"
    cond_prob: float = 0.3  # official: 0.3 for UCF-101, 0.2 for SkyTimelapse
    clip_x0: bool = True
    # The autoencoder's latents are multiplied by this before diffusion and divided by it after
    # sampling (x0 is then clamped to [-latent_scale, latent_scale]). Official: 1, no scaling
    # (its YAML's `scale_by_std` is never read); the debug preset keeps 1 (1.6 measured no gain).
    latent_scale: float = 1.0
    # Min-SNR-gamma loss weighting (Hang et al. 2023): each sample's loss times
    # min(SNR_t, gamma) / SNR_t. 0 = off, the official unweighted loss.
    min_snr_gamma: float = 0.0
    class_dropout: float = (
        0.1  # label dropout for classifier-free guidance (class-conditional only)
    )

    def validate(self) -> None:
        check_schedule(self.num_timesteps, self.linear_start, self.linear_end)
        if not 0 < self.latent_scale < 1e3:
            raise ConfigError(
                f"latent_scale must be positive (and below 1000), got {self.latent_scale}"
            )
        if not 0 <= self.min_snr_gamma < 1e6:
            raise ConfigError(
                f"min_snr_gamma must be 0 (off) or positive, got {self.min_snr_gamma}"
            )
        for name in ("cond_prob", "class_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value}")


MAX_TIMESTEPS = 100_000  # far beyond any schedule in use; keeps a typo from filling memory


def check_schedule(num_timesteps: Any, linear_start: Any, linear_end: Any) -> None:
    """A schedule's numbers, or one `ConfigError`: a NaN or reversed range gives black videos."""
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int):
        raise ConfigError(f"num_timesteps must be a whole number, got {num_timesteps!r}")
    if not 2 <= num_timesteps <= MAX_TIMESTEPS:
        raise ConfigError(f"num_timesteps must lie in [2, {MAX_TIMESTEPS}], got {num_timesteps}")
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (linear_start, linear_end)
    )
    if not (numbers and 0 < linear_start < linear_end < 1):
        raise ConfigError(
            f"need 0 < linear_start < linear_end < 1, got {linear_start!r} and {linear_end!r}"
        )


class NoiseSchedule:
    """Per-step coefficients of the forward process, as float32 tensors (computed in float64)."""

    def __init__(
        self, num_timesteps: int = 1000, linear_start: float = 0.0015, linear_end: float = 0.0195
    ):
        check_schedule(num_timesteps, linear_start, linear_end)
        betas = (
            np.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=np.float64) ** 2
        )
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(a, dtype=torch.float32)

        self.num_timesteps = num_timesteps
        self.linear_start, self.linear_end = linear_start, linear_end
        self.betas = f32(betas)
        self.alphas_cumprod = f32(alphas_cumprod)
        self.sqrt_alphas_cumprod = f32(np.sqrt(alphas_cumprod))
        self.sqrt_one_minus_alphas_cumprod = f32(np.sqrt(1.0 - alphas_cumprod))
        self.sqrt_recip_alphas_cumprod = f32(np.sqrt(1.0 / alphas_cumprod))
        self.sqrt_recipm1_alphas_cumprod = f32(np.sqrt(1.0 / alphas_cumprod - 1.0))
        self.posterior_mean_coef1 = f32(
            betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        )
        self.posterior_mean_coef2 = f32(
            (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)
        )
        self.posterior_log_variance_clipped = f32(np.log(np.maximum(posterior_variance, 1e-20)))

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> NoiseSchedule:
        """The schedule a `DiffusionConfig` describes."""
        return cls(cfg.num_timesteps, cfg.linear_start, cfg.linear_end)

    def at(self, name: str, t: torch.Tensor, like: Latent) -> torch.Tensor:
        """Coefficient `name` at integer steps t [B], shaped to multiply `like` per sample."""
        values = getattr(self, name).to(t.device)[t.long()]
        if isinstance(like, torch.Tensor):
            return values.reshape(-1, *([1] * (like.ndim - 1)))
        return values  # a TriplaneLatent takes one value per sample as a [B] tensor

    def min_snr_weights(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """min(SNR_t, gamma) / SNR_t per sample [B], SNR_t = acp_t / (1 - acp_t)."""
        acp = self.alphas_cumprod.to(t.device)[t.long()]
        snr = acp / (1 - acp)
        return snr.clamp(max=gamma) / snr

    def q_sample(self, x0: Latent, t: torch.Tensor, noise: Latent) -> Latent:
        """x_t = sqrt(acp_t) x0 + sqrt(1 - acp_t) eps."""
        return (
            self.at("sqrt_alphas_cumprod", t, x0) * x0
            + self.at("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def predict_x0(self, xt: Latent, t: torch.Tensor, eps: Latent) -> Latent:
        """x0 = sqrt(1 / acp_t) x_t - sqrt(1 / acp_t - 1) eps."""
        return (
            self.at("sqrt_recip_alphas_cumprod", t, xt) * xt
            - self.at("sqrt_recipm1_alphas_cumprod", t, xt) * eps
        )


def diffusion_loss(
    eps_pred: Latent,
    noise: Latent,
    kind: Literal["l2", "l1"] = "l2",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample error averaged over every other axis, then over the batch (official form);
    `weights` [B] multiply the per-sample errors before the batch mean (Min-SNR)."""
    if isinstance(eps_pred, TriplaneLatent):  # the mean over all of a sample's latent values
        eps_pred, noise = eps_pred.pack(), noise.pack()
    diff = eps_pred.float() - noise.float()
    per_element = diff.square() if kind == "l2" else diff.abs()
    per_sample = per_element.flatten(1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()
