"""The PVDM triplane diffusion UNet (paper Sec. 3.3; official `UNetModel` in `models/ddpm/unet.py`).

A guided-diffusion 2D UNet (scale-shift ResBlocks, ResBlock up/down-sampling, per-plane
attention at the configured down-sampling factors, sinusoidal timestep embedding) is applied to
each latent plane (hw, tw, th) with shared weights. After every block, a joint attention over
the tokens of all three planes lets them exchange information. Frame conditioning concatenates
the previous clip's latent along channels (zeros when unconditional, as the official `zeros`
buffer); optional class conditioning adds a label embedding to the timestep embedding, with
the index `num_classes` as the null class for classifier-free guidance.

Plane sizes come from the input (the official code hard-codes 32 x 32 and 16 frames); see
`unet_blocks.py` for how odd sizes are down- and up-sampled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pvdm.errors import ConfigError
from pvdm.models.attention import (
    ATTENTION_BACKENDS,
    AttentionBackend,
    GroupNorm32,
    maybe_checkpoint,
)
from pvdm.models.latent import TriplaneLatent
from pvdm.models.pretrained import PretrainedMixin
from pvdm.models.unet_blocks import (
    Resample,
    ResBlock,
    TokenAttention,
    TriplaneBlock,
    timestep_embedding,
)


@dataclass
class UNetConfig:
    """Architecture of the triplane UNet (defaults: the released model, latent-diffusion/base.yaml)."""

    latent_channels: int = 4  # official in_channels = out_channels
    model_channels: int = 256
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [1, 2, 4])  # down factors
    num_heads: int = 8
    head_channels: int | None = None  # when set, heads = width // head_channels
    dropout: float = 0.0
    frame_conditional: bool = True  # official `cond_model`
    num_classes: int | None = None  # class-conditional when set (null class = num_classes)
    # Not in the official model: a learned embedding per plane (hw, tw, th) added to the
    # timestep embedding. The shared-weight UNet has no other way to tell the planes apart than
    # their sizes and the condition, so when the three planes have the same size (e.g. 8 frames
    # at 8 x 8 latents) an unconditional model generates one average plane type three times.
    plane_embedding: bool = False
    attention: AttentionBackend = "sdpa"
    gradient_checkpointing: bool = False

    def heads(self, width: int) -> int:
        """Attention heads at a given width."""
        return width // self.head_channels if self.head_channels else self.num_heads

    def validate(self) -> None:
        """Check sizes; raise `ConfigError` naming the field."""
        for name in ("latent_channels", "model_channels", "num_res_blocks", "num_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult must be positive integers, got {self.channel_mult}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"num_classes must be positive or null, got {self.num_classes}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ConfigError(
                f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}"
            )
        for width in {self.model_channels * m for m in self.channel_mult}:
            if width % 32:
                raise ConfigError(
                    f"channel width {width} (model_channels x channel_mult) must be a multiple "
                    "of 32 for GroupNorm32"
                )
            if self.head_channels is not None and (
                self.head_channels < 1 or width % self.head_channels
            ):
                raise ConfigError(
                    f"width {width} is not divisible by head_channels {self.head_channels}"
                )
            if width % self.heads(width):
                raise ConfigError(f"width {width} is not divisible by num_heads {self.num_heads}")


UNET_PRESETS: dict[str, Callable[[], UNetConfig]] = {
    # the released UCF-101 / SkyTimelapse models (PVDM-L, configs/latent-diffusion/base.yaml)
    "official": lambda: UNetConfig(),
    # PVDM-S: base width 128
    "small": lambda: UNetConfig(model_channels=128),
    # tiny, for tests and the CPU demo
    "debug": lambda: UNetConfig(
        model_channels=32,
        channel_mult=[1, 2],
        num_res_blocks=1,
        attention_resolutions=[2],
        num_heads=4,
    ),
}


def unet_preset(name: str) -> UNetConfig:
    """The named UNet config (`official`, `small`, `debug`)."""
    if name not in UNET_PRESETS:
        raise ConfigError(f"unknown UNet preset '{name}' (known: {', '.join(UNET_PRESETS)})")
    return UNET_PRESETS[name]()


@dataclass(frozen=True)
class BlockSpec:
    """One UNet block: main ResBlock widths, per-plane attention, resampling ResBlock."""

    in_ch: int
    out_ch: int
    attention: bool
    resample: Resample = None


def block_plan(config: UNetConfig) -> tuple[list[BlockSpec], int, list[BlockSpec]]:
    """(down blocks, middle width, up blocks), in the official order (after the input conv)."""
    mc, levels = config.model_channels, len(config.channel_mult)
    down, up = [], []
    ch, ds, skip_chans = mc, 1, [mc]
    for level, mult in enumerate(config.channel_mult):
        for _ in range(config.num_res_blocks):
            down.append(BlockSpec(ch, mult * mc, ds in config.attention_resolutions))
            ch = mult * mc
            skip_chans.append(ch)
        if level != levels - 1:
            down.append(BlockSpec(ch, ch, False, "down"))
            skip_chans.append(ch)
            ds *= 2
    middle = ch
    for level, mult in reversed(list(enumerate(config.channel_mult))):
        for i in range(config.num_res_blocks + 1):
            resample = "up" if level and i == config.num_res_blocks else None
            up.append(
                BlockSpec(
                    ch + skip_chans.pop(), mult * mc, ds in config.attention_resolutions, resample
                )
            )
            ch = mult * mc
            if resample:
                ds //= 2
    return down, middle, up


class TimeEmbedding(nn.Module):
    """Linear, SiLU, Linear on the sinusoidal timestep embedding."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_dim, dim)
        self.linear2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(F.silu(self.linear1(x)))


class TriplaneUNet(PretrainedMixin, nn.Module):
    """eps-prediction network on triplane latents: `forward(x_t, t, cond=None, labels=None)`."""

    model_type = "unet"
    config_class = UNetConfig

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        mc, emb_dim = c.model_channels, 4 * c.model_channels

        def res(in_ch: int, out_ch: int, resample: Resample = None) -> ResBlock:
            return ResBlock(in_ch, out_ch, emb_dim, c.dropout, resample)

        def attn(width: int) -> TokenAttention:
            return TokenAttention(width, c.heads(width), c.attention)

        self.time_embed = TimeEmbedding(mc, emb_dim)
        self.label_embed = nn.Embedding(c.num_classes + 1, emb_dim) if c.num_classes else None
        self.plane_embed = nn.Embedding(3, emb_dim) if c.plane_embedding else None
        in_ch = c.latent_channels * (2 if c.frame_conditional else 1)
        self.input_conv = nn.Conv2d(in_ch, mc, 3, padding=1)
        down, middle, up = block_plan(c)
        self.down_blocks = nn.ModuleList(
            TriplaneBlock(
                res(s.in_ch, s.out_ch, s.resample),
                attn(s.out_ch) if s.attention else None,
                None,
                attn(s.out_ch),
            )
            for s in down
        )
        self.mid_block = TriplaneBlock(
            res(middle, middle), attn(middle), res(middle, middle), attn(middle)
        )
        self.up_blocks = nn.ModuleList(
            TriplaneBlock(
                res(s.in_ch, s.out_ch),
                attn(s.out_ch) if s.attention else None,
                res(s.out_ch, s.out_ch, "up") if s.resample else None,
                attn(s.out_ch),
            )
            for s in up
        )
        self.out_norm = GroupNorm32(mc)
        self.out_conv = nn.Conv2d(mc, c.latent_channels, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        """guided-diffusion init: PyTorch defaults, zeros for every layer that ends a residual branch."""
        for module in self.modules():
            if isinstance(module, ResBlock):
                zero = module.conv2
            elif isinstance(module, TokenAttention):
                zero = module.proj
            else:
                continue
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def _embedding(self, t: Tensor, labels: Tensor | None, batch: int) -> Tensor:
        if t.ndim == 0:
            t = t.expand(batch)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        if self.label_embed is None:
            if labels is not None:
                raise ValueError("labels were given but the model is not class-conditional")
            return emb
        if labels is None:  # the null class: unconditional
            labels = torch.full((batch,), self.config.num_classes, device=t.device)
        return emb + self.label_embed(labels)

    def forward(
        self,
        x: TriplaneLatent,
        t: Tensor,
        cond: TriplaneLatent | None = None,
        labels: Tensor | None = None,
    ) -> TriplaneLatent:
        """Predicted noise for x_t at timesteps t [B]; `cond`: previous clip's latent or None."""
        c = self.config
        if x.shape.channels != c.latent_channels:
            raise ValueError(f"expected {c.latent_channels} latent channels, got {x.shape}")
        emb = self._embedding(t, labels, x.batch_size)
        embs = (
            [emb] * 3
            if self.plane_embed is None
            else [emb + self.plane_embed.weight[i].to(emb.dtype) for i in range(3)]
        )
        planes = list(x.planes)
        if c.frame_conditional:
            cond_planes = [torch.zeros_like(p) for p in planes] if cond is None else cond.planes
            planes = [torch.cat([p, q.to(p.dtype)], dim=1) for p, q in zip(planes, cond_planes)]
        elif cond is not None:
            raise ValueError("cond was given but the model is not frame-conditional")
        ckpt = c.gradient_checkpointing
        planes = [self.input_conv(p) for p in planes]
        skips = [planes]
        for block in self.down_blocks:
            planes = maybe_checkpoint(ckpt, block, planes, embs)
            skips.append(planes)
        planes = maybe_checkpoint(ckpt, self.mid_block, planes, embs)
        for block in self.up_blocks:
            planes = [torch.cat([h, s], dim=1) for h, s in zip(planes, skips.pop())]
            sizes = [tuple(s.shape[-2:]) for s in skips[-1]] if block.res2 is not None else None
            planes = maybe_checkpoint(ckpt, block, planes, embs, sizes)
        out = [self.out_conv(F.silu(self.out_norm(h))) for h in planes]
        return TriplaneLatent(*out)
