"""PVDM networks: the triplane autoencoder, the triplane diffusion UNet and their latent.

Checkpoints: `Model.save_pretrained(path)`, `Model.from_pretrained(path)`, `load_model(path)`.
Official PVDM checkpoints: see `pvdm.convert`.
"""

from pvdm.models.autoencoder import (
    AUTOENCODER_PRESETS,
    AutoencoderConfig,
    TriplaneAutoencoder,
    autoencoder_preset,
)
from pvdm.models.latent import LatentShape, TriplaneLatent, randn_latent
from pvdm.models.pretrained import load_model, read_header
from pvdm.models.unet import UNET_PRESETS, TriplaneUNet, UNetConfig, unet_preset

__all__ = [
    "AUTOENCODER_PRESETS",
    "UNET_PRESETS",
    "AutoencoderConfig",
    "LatentShape",
    "TriplaneAutoencoder",
    "TriplaneLatent",
    "TriplaneUNet",
    "UNetConfig",
    "autoencoder_preset",
    "load_model",
    "randn_latent",
    "read_header",
    "unet_preset",
]
