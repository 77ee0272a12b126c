"""The PVDM triplane autoencoder (paper Sec. 3.1-3.2; official `ViTAutoencoder`).

video [B, 3, T, H, W] in [-1, 1]
  -> patches (p x p, flattened (p1, p2, c)) -> Linear -> TimeSformer encoder  [B, T, H'W', C]
  -> attention pooling along t, h and w -> planes hw (H', W'), tw (T, W'), th (T, H')
  -> 1x1 projection to latent channels, tanh                 = the latent (`encode`)
  -> 1x1 projection back to C, broadcast-and-sum to a cube [B, T, H', W', C]
  -> TimeSformer decoder -> per-token p x p RGB patch (official ConvTranspose2d, k = s = p)
  -> 2 * sigmoid - 1                                         = the video (`decode`)

H' = H / p and W' = W / p; time is not downsampled (T' = T). The official code fixes the latent
side to res / 8, which breaks at 128 x 128 (patch 4); here the side is always res / patch_size,
so `official-128` is the spec's option (a): patch 4, a 32 x 32 latent, the same latent shape as
256 x 256. Any frame count works. Quirks kept from the official model are documented where they
live: `rotary.py` (temporal frequency layout) and `projection.py` (read-out at position 0).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from pvdm.errors import ConfigError
from pvdm.models.attention import ATTENTION_BACKENDS, AttentionBackend
from pvdm.models.latent import PLANES, LatentShape, TriplaneLatent
from pvdm.models.pretrained import PretrainedMixin
from pvdm.models.projection import PlanePooling, Readout
from pvdm.models.rotary import TemporalRotary
from pvdm.models.timesformer import TimeSformer


@dataclasses.dataclass
class AutoencoderConfig:
    """Architecture of the triplane autoencoder (defaults: the released 256 x 256 model)."""

    resolution: int = 256  # square frames, H = W
    frames: int = 16
    patch_size: int = 8
    width: int = 384  # official `channels`
    depth: int = 8  # blocks in the encoder and in the decoder
    decoder_depth: int | None = None  # blocks in the decoder when not `depth` (not official)
    # feature maps of a small convolutional refiner on the decoded pixels (not official: None)
    refine_channels: int | None = None
    heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4  # GEGLU hidden size = ff_mult * width
    latent_channels: int = 4  # official `embed_dim`
    projection_depth: int = 4
    projection_heads: int = 4
    projection_head_dim: int = 48  # official: width // 8
    projection_mlp_dim: int = 512
    temporal_rotary: TemporalRotary = "official"
    projection_readout: Readout = "first"
    attention: AttentionBackend = "sdpa"
    gradient_checkpointing: bool = False

    @property
    def latent_side(self) -> int:
        """H' = W' = resolution / patch_size."""
        return self.resolution // self.patch_size

    def validate(self) -> None:
        """Check sizes; raise `ConfigError` naming the field."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ConfigError(f"{f.name} must be a positive integer, got {value}")
        if self.resolution % self.patch_size:
            raise ConfigError(
                f"resolution {self.resolution} is not divisible by patch_size {self.patch_size}"
            )
        if self.head_dim % 4:
            raise ConfigError(
                f"head_dim must be a multiple of 4 for the axial rotary embedding, got {self.head_dim}"
            )
        if self.attention not in ATTENTION_BACKENDS:
            raise ConfigError(
                f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}"
            )


AUTOENCODER_PRESETS: dict[str, Callable[[], AutoencoderConfig]] = {
    # the released UCF-101 / SkyTimelapse checkpoints (configs/autoencoder/base.yaml)
    "official": lambda: AutoencoderConfig(),
    # 128 x 128 with patch 4: the same 32 x 32 x 16 latent as `official` (spec option (a))
    "official-128": lambda: AutoencoderConfig(resolution=128, patch_size=4),
    # tiny, for tests and the CPU demo: 32 x 32, 8 frames, latent 8 x 8 x 8
    "debug": lambda: AutoencoderConfig(
        resolution=32,
        frames=8,
        patch_size=4,
        width=64,
        depth=2,
        heads=4,
        head_dim=16,
        projection_depth=1,
        projection_heads=4,
        projection_head_dim=16,
        projection_mlp_dim=128,
    ),
}


def autoencoder_preset(name: str) -> AutoencoderConfig:
    """The named autoencoder config (`official`, `official-128`, `debug`)."""
    if name not in AUTOENCODER_PRESETS:
        raise ConfigError(
            f"unknown autoencoder preset '{name}' (known: {', '.join(AUTOENCODER_PRESETS)})"
        )
    return AUTOENCODER_PRESETS[name]()


class PixelHead(nn.Module):
    """Each token to a p x p RGB patch: the official ConvTranspose2d(C, 3, k=p, stride=p)."""

    def __init__(self, width: int, patch_size: int, channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.weight = nn.Parameter(torch.empty(width, channels, patch_size, patch_size))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's ConvTranspose2d default init (its fan-in is weight.shape[1] * p * p)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight.shape[1] * self.patch_size**2)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, T, H', W', C] -> video [B, 3, T, H' p, W' p]
        y = torch.matmul(x, self.weight.flatten(1).to(x.dtype))  # [B, T, H', W', 3 p p]
        p = self.patch_size
        y = rearrange(y, "b t h w (c p1 p2) -> b c t (h p1) (w p2)", p1=p, p2=p)
        return y + self.bias.to(y.dtype).view(1, -1, 1, 1, 1)


class PixelRefiner(nn.Module):
    """A residual on the pixel head's RGB logits from three 3 x 3 convolutions per frame over the
    logits and `channels` more feature maps of the pixel head (not in the official model): it can
    draw edges across patch borders, which a per-patch linear head cannot."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3 + channels, channels, 3, padding=1)
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # starts as the identity on the logits
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, y: Tensor) -> Tensor:
        # y: [B, 3 + C, T, H, W] -> RGB logits [B, 3, T, H, W]
        t = y.shape[2]
        h = rearrange(y, "b c t h w -> (b t) c h w")
        h = F.gelu(self.conv_mid(F.gelu(self.conv_in(h))))
        return y[:, :3] + rearrange(self.conv_out(h), "(b t) c h w -> b c t h w", t=t)


class TriplaneAutoencoder(PretrainedMixin, nn.Module):
    """Video <-> triplane latent. `encode`, `decode`, `forward` (reconstruction)."""

    model_type = "autoencoder"
    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        side = c.latent_side
        ckpt = c.gradient_checkpointing

        def timesformer(depth: int) -> TimeSformer:
            return TimeSformer(
                width=c.width,
                depth=depth,
                heads=c.heads,
                head_dim=c.head_dim,
                ff_mult=c.ff_mult,
                backend=c.attention,
                temporal_layout=c.temporal_rotary,
                gradient_checkpointing=ckpt,
            )

        def pooling(length: int) -> PlanePooling:
            return PlanePooling(
                width=c.width,
                length=length,
                depth=c.projection_depth,
                heads=c.projection_heads,
                head_dim=c.projection_head_dim,
                mlp_dim=c.projection_mlp_dim,
                backend=c.attention,
                readout=c.projection_readout,
                gradient_checkpointing=ckpt,
            )

        self.patch_embed = nn.Linear(3 * c.patch_size**2, c.width)
        self.encoder = timesformer(c.depth)
        # hw pools over t, tw over h, th over w: sequence lengths T, H', W'
        self.pool = nn.ModuleDict(
            {"hw": pooling(c.frames), "tw": pooling(side), "th": pooling(side)}
        )
        self.to_latent = nn.ModuleDict({k: nn.Linear(c.width, c.latent_channels) for k in PLANES})
        self.from_latent = nn.ModuleDict({k: nn.Linear(c.latent_channels, c.width) for k in PLANES})
        self.decoder = timesformer(c.depth if c.decoder_depth is None else c.decoder_depth)
        extra = c.refine_channels or 0
        self.pixel_head = PixelHead(c.width, c.patch_size, 3 + extra)
        self.refine = PixelRefiner(extra) if extra else None

    def latent_shape(self) -> LatentShape:
        """Per-sample latent size: (channels, frames T', height H', width W')."""
        c = self.config
        return LatentShape(c.latent_channels, c.frames, c.latent_side, c.latent_side)

    def _check_video(self, video: Tensor) -> None:
        c = self.config
        expected = (3, c.frames, c.resolution, c.resolution)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"expected video [B, 3, {c.frames}, {c.resolution}, {c.resolution}] "
                f"(B, C, T, H, W), got {tuple(video.shape)}"
            )

    def encode(self, video: Tensor) -> TriplaneLatent:
        """Video [B, 3, T, H, W] in [-1, 1] -> latent planes in (-1, 1) (after tanh)."""
        self._check_video(video)
        p, side = self.config.patch_size, self.config.latent_side
        b = video.shape[0]
        tokens = rearrange(video, "b c t (h p1) (w p2) -> b t (h w) (p1 p2 c)", p1=p, p2=p)
        x = self.encoder(self.patch_embed(tokens), side, side)  # [B, T, H'W', C]
        cube = rearrange(x, "b t (h w) c -> b t h w c", h=side)
        pooled = {
            "hw": self.pool["hw"](rearrange(cube, "b t h w c -> (b h w) t c")),
            "tw": self.pool["tw"](rearrange(cube, "b t h w c -> (b t w) h c")),
            "th": self.pool["th"](rearrange(cube, "b t h w c -> (b t h) w c")),
        }
        z = {k: torch.tanh(self.to_latent[k](v)) for k, v in pooled.items()}
        return TriplaneLatent(
            hw=rearrange(z["hw"], "(b h w) e -> b e h w", b=b, h=side),
            tw=rearrange(z["tw"], "(b t w) e -> b e t w", b=b, w=side),
            th=rearrange(z["th"], "(b t h) e -> b e t h", b=b, h=side),
        )

    def decode(self, z: TriplaneLatent) -> Tensor:
        """Latent planes -> video [B, 3, T, H, W] in [-1, 1]."""
        if z.shape != self.latent_shape():
            raise ValueError(f"expected a latent of shape {self.latent_shape()}, got {z.shape}")
        hw = self.from_latent["hw"](rearrange(z.hw, "b e h w -> b h w e"))
        tw = self.from_latent["tw"](rearrange(z.tw, "b e t w -> b t w e"))
        th = self.from_latent["th"](rearrange(z.th, "b e t h -> b t h e"))
        # broadcast-and-sum, official order xy + yt + xt: cube [B, T, H', W', C]
        cube = hw[:, None] + tw[:, :, None] + th[:, :, :, None]
        side = self.config.latent_side
        x = self.decoder(rearrange(cube, "b t h w c -> b t (h w) c"), side, side)
        x = rearrange(x, "b t (h w) c -> b t h w c", h=side)
        logits = self.pixel_head(x)
        if self.refine is not None:
            logits = self.refine(logits)
        return 2 * torch.sigmoid(logits) - 1

    def forward(self, video: Tensor) -> Tensor:
        """Reconstruction: decode(encode(video)), [B, 3, T, H, W] in [-1, 1]."""
        return self.decode(self.encode(video))
