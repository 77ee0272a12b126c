"""2D and 3D PatchGAN discriminators of the autoencoder's GAN phase (official `losses/perceptual.py`).

pix2pixHD-style: kernel 4, padding 2, LeakyReLU 0.2, channels ndf, 2ndf, 4ndf, 8ndf (capped at
512), strides 2, 2, 2, 1, 1, and every stage's output returned for feature matching. The 2D one
sees single frames [B, C, H, W], the 3D one whole clips [B, C, T, H, W].

Normalisation: the official code hard-codes SyncBatchNorm, which crashes without a process group
(PVDM#17). Here it is plain BatchNorm, converted to SyncBatchNorm by the trainer only under
DDP on GPUs. The discriminators stay in train mode (batch statistics), as in the official code.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """A PatchGAN over images (`dims=2`) or videos (`dims=3`) returning logits and features."""

    def __init__(self, dims: int = 2, in_channels: int = 3, ndf: int = 64, num_layers: int = 3):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        k, pad = 4, 2
        stages = [nn.Sequential(conv(in_channels, ndf, k, 2, pad), nn.LeakyReLU(0.2, True))]
        width = ndf
        for _ in range(1, num_layers):
            prev, width = width, min(width * 2, 512)
            stages.append(
                nn.Sequential(conv(prev, width, k, 2, pad), norm(width), nn.LeakyReLU(0.2, True))
            )
        prev, width = width, min(width * 2, 512)
        stages.append(
            nn.Sequential(conv(prev, width, k, 1, pad), norm(width), nn.LeakyReLU(0.2, True))
        )
        stages.append(nn.Sequential(conv(width, 1, k, 1, pad)))
        self.stages = nn.ModuleList(stages)
        self.init_weights()

    def init_weights(self) -> None:
        """Official init: conv weights N(0, 0.02) (biases default), norm weights N(1, 0.02), bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the output of every stage (the last one is the logits)."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return x, features


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss: (mean relu(1 - real) + mean relu(1 + fake)) / 2."""
    return 0.5 * (torch.relu(1.0 - logits_real).mean() + torch.relu(1.0 + logits_fake).mean())
