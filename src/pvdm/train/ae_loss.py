"""The autoencoder's training loss, the official recipe (`losses/perceptual.py`, spec section 2).

Generator: 4 * L1 + 4 * LPIPS(one random frame per video) and, once the discriminators are on,
-1 * (mean D2(fake frame) + mean D3(fake clip)) + 4 * feature matching over the first four
stages of both discriminators. Discriminators: hinge loss on (real, fake) frames and clips.

Differences from the official code, on purpose:
- While the discriminators are off (phase 1) they are not run at all; the official code runs
  all four discriminator passes every step and multiplies them by zero.
- The discriminators use BatchNorm (SyncBatchNorm only under DDP on GPUs), see discriminators.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pvdm.errors import ConfigError
from pvdm.models.discriminators import PatchDiscriminator, hinge_d_loss


@dataclass
class AutoencoderLossConfig:
    """Loss weights, the discriminators, and the held-out divergence guard of the GAN phase."""

    l1_weight: float = 4.0
    perceptual_weight: float = 4.0  # 0 turns LPIPS off (then no VGG16 file is needed)
    gan_weight: float = 1.0
    feature_weight: float = 4.0
    disc_start: int = 100_000_000  # step from which the discriminators train (phase 2: 0)
    # Not official: latent_hinge * mean(relu(|a| - latent_hinge_at)^2) over the pre-tanh latent
    # values a, which keeps a fast-trained bottleneck out of tanh saturation (0 = off).
    latent_hinge: float = 0.0
    latent_hinge_at: float = 1.5
    # Not official: gradient_weight * L1 between the differences of neighbouring pixels (along
    # h, w and t) of the reconstruction and of the input, which weighs edges and stripes (0 = off).
    gradient_weight: float = 0.0
    # Not official: i3d_weight * an LPIPS-like distance (features unit-normalised over channels,
    # squared difference summed over channels, averaged over positions) between the early
    # features (up to `i3d_layer`) of the FVD detector's Kinetics-400 I3D on the reconstruction
    # and on the input, at the clips' own resolution (0 = off; `i3d_weights` names the file).
    i3d_weight: float = 0.0
    i3d_layer: str = "Conv3d_2c_3x3"
    i3d_weights: str = "i3d_k400"
    disc_ndf: int = 64
    disc_layers: int = 3
    disc_lr: float = 1e-4
    disc_grad_clip: float = 1.0
    vgg_weights: str = "vgg16"  # a path or a known name (pvdm.weights)
    lpips_weights: str = "lpips_vgg"
    # held-out reconstruction guard (the GAN phase can diverge suddenly)
    guard_clips: int = 8
    guard_margin_db: float = 1.0  # a PSNR drop below the best that counts as degradation
    guard_patience: int = 2  # consecutive degraded evaluations before acting
    on_divergence: Literal["stop", "rollback", "off"] = "stop"
    max_rollbacks: int = 2

    def validate(self) -> None:
        if self.latent_hinge_at <= 0:
            raise ConfigError(f"loss.latent_hinge_at must be > 0, got {self.latent_hinge_at}")
        for name in (
            "l1_weight",
            "perceptual_weight",
            "gan_weight",
            "feature_weight",
            "latent_hinge",
            "gradient_weight",
            "i3d_weight",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.disc_start < 0:
            raise ConfigError(f"loss.disc_start must be >= 0, got {self.disc_start}")
        if self.guard_margin_db <= 0 or self.guard_patience < 1:
            raise ConfigError("loss.guard_margin_db must be > 0 and loss.guard_patience >= 1")


class Discriminators(nn.Module):
    """The 2D and 3D PatchGANs; `forward` is the discriminator loss (one module for DDP)."""

    def __init__(self, cfg: AutoencoderLossConfig):
        super().__init__()
        self.gan_weight = cfg.gan_weight
        self.d2 = PatchDiscriminator(2, 3, cfg.disc_ndf, cfg.disc_layers)
        self.d3 = PatchDiscriminator(3, 3, cfg.disc_ndf, cfg.disc_layers)

    def forward(
        self, x: torch.Tensor, xrec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hinge loss of both discriminators on real and reconstructed videos, and its parts."""
        xrec = xrec.detach()
        x2d, xrec2d = random_frames(x, xrec)  # the frame is drawn anew, as officially
        # real and fake pass separately: BatchNorm statistics per call, as officially
        loss_2d = hinge_d_loss(self.d2(x2d)[0], self.d2(xrec2d)[0])
        loss_3d = hinge_d_loss(self.d3(x)[0], self.d3(xrec)[0])
        return self.gan_weight * (loss_2d + loss_3d), loss_2d.detach(), loss_3d.detach()


def random_frames(x: torch.Tensor, xrec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One random frame per video (the official LPIPS and 2D-discriminator input)."""
    b, _, t = x.shape[:3]
    idx = torch.randint(0, t, (b,)).to(x.device)
    pick = torch.arange(b, device=x.device)
    return x[pick, :, idx], xrec[pick, :, idx]


class AutoencoderLoss(nn.Module):
    """LPIPS (frozen) and the discriminators, with the generator loss."""

    def __init__(
        self,
        cfg: AutoencoderLossConfig,
        lpips: nn.Module | None = None,
        i3d: nn.Module | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        if cfg.perceptual_weight > 0 and lpips is None:
            raise ConfigError("loss.perceptual_weight > 0 needs an LPIPS network")
        if cfg.i3d_weight > 0 and i3d is None:
            raise ConfigError("loss.i3d_weight > 0 needs the I3D features (I3DFeatures)")
        self.lpips = lpips.eval().requires_grad_(False) if lpips is not None else None
        self.i3d = i3d.eval().requires_grad_(False) if i3d is not None else None
        self.discriminators = Discriminators(cfg)

    def gan_active(self, step: int) -> bool:
        """Whether the discriminators are on at this step."""
        return step >= self.cfg.disc_start and (
            self.cfg.gan_weight > 0 or self.cfg.feature_weight > 0
        )

    def generator_loss(
        self, x: torch.Tensor, xrec: torch.Tensor, gan: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total generator loss and its parts. x, xrec: [B, 3, T, H, W] in [-1, 1]."""
        cfg = self.cfg
        rec = cfg.l1_weight * F.l1_loss(xrec, x)
        x2d, xrec2d = random_frames(x, xrec)
        total = rec
        logs = {"l1": rec.item()}
        if cfg.gradient_weight > 0:
            g = cfg.gradient_weight * gradient_l1(xrec, x)
            total = total + g
            logs["gradient_l1"] = g.item()
        if self.lpips is not None and cfg.perceptual_weight > 0:
            p = cfg.perceptual_weight * self.lpips(xrec2d, x2d).mean()
            total = total + p
            logs["lpips"] = p.item()
        if self.i3d is not None and cfg.i3d_weight > 0:
            with torch.no_grad():
                real = _unit(self.i3d(x))
            q = cfg.i3d_weight * (_unit(self.i3d(xrec)) - real).pow(2).sum(1).mean()
            total = total + q
            logs["i3d"] = q.item()
        if gan:
            d2, d3 = self.discriminators.d2, self.discriminators.d3
            with _frozen(d2), _frozen(d3):
                logits_fake_2d, feats_fake_2d = d2(xrec2d)
                logits_fake_3d, feats_fake_3d = d3(xrec)
                with torch.no_grad():
                    _, feats_real_2d = d2(x2d)
                    _, feats_real_3d = d3(x)
            g_adv = -cfg.gan_weight * (logits_fake_2d.mean() + logits_fake_3d.mean())
            fm = sum(F.l1_loss(f, r) for f, r in zip(feats_fake_2d[:-1], feats_real_2d[:-1])) + sum(
                F.l1_loss(f, r) for f, r in zip(feats_fake_3d[:-1], feats_real_3d[:-1])
            )
            fm = cfg.feature_weight * fm
            total = total + g_adv + fm
            logs.update(g_adv=g_adv.item(), feature_match=fm.item())
        logs["g_total"] = total.item()
        return total, logs


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Features [B, C, ...] divided by their norm over C (LPIPS's normalisation)."""
    return features / (features.pow(2).sum(1, keepdim=True).sqrt() + eps)


class I3DFeatures(nn.Module):
    """The first layers of the Kinetics-400 I3D, up to `layer` (frozen): [B, 3, T, H, W] in
    [-1, 1] at any size -> features [B, C, T', H', W']."""

    def __init__(self, i3d: nn.Module, layer: str):
        super().__init__()
        order = list(getattr(i3d, "order", []))
        if layer not in order:
            raise ConfigError(f"loss.i3d_layer must be one of {', '.join(order)}, got {layer!r}")
        names = order[: order.index(layer) + 1]
        self.names = names
        self.layers = nn.ModuleDict({n: getattr(i3d, n) for n in names})
        self.eval().requires_grad_(False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = video
        for name in self.names:
            x = self.layers[name](x)
        return x

    @classmethod
    def from_file(cls, weights: str, layer: str) -> I3DFeatures:
        """From an I3D weights file or known name (`pvdm.metrics.i3d_detector.load_i3d`)."""
        from pvdm.metrics.i3d_detector import load_i3d

        model = load_i3d(weights)
        if not hasattr(model, "order"):
            raise ConfigError(f"loss.i3d_weights {weights!r} is not an I3D state dict")
        return cls(model, layer)


def gradient_l1(xrec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between neighbouring-pixel differences along t, h and w (summed)."""
    total = xrec.new_zeros(())
    for dim in (2, 3, 4):
        if x.shape[dim] > 1:
            total = total + F.l1_loss(torch.diff(xrec, dim=dim), torch.diff(x, dim=dim))
    return total


class PreTanhProbe:
    """Records the autoencoder's pre-tanh latent values (forward hooks on `to_latent`) and
    turns them into the `latent_hinge` penalty; a no-op when the weight is 0."""

    def __init__(self, model: nn.Module, cfg: AutoencoderLossConfig):
        self.cfg = cfg
        self.values: list[torch.Tensor] = []
        self.handles = []
        if cfg.latent_hinge > 0:
            for layer in model.to_latent.values():
                self.handles.append(layer.register_forward_hook(self._record))

    def _record(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        if module.training:
            self.values.append(output)

    def penalty(self) -> torch.Tensor | None:
        """The penalty of the values recorded since the last call (None when off or empty)."""
        values, self.values = self.values, []
        if not values:
            return None
        at = self.cfg.latent_hinge_at
        excess = [(v.float().abs() - at).clamp(min=0).square().mean() for v in values]
        return self.cfg.latent_hinge * torch.stack(excess).mean()


class _frozen:
    """Context: a module's parameters do not collect gradients (the generator pass through D)."""

    def __init__(self, module: nn.Module):
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)
