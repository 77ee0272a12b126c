"""pvdm: Video Probabilistic Diffusion Models in Projected Latent Space (Yu et al., CVPR 2023).

Video layout everywhere: [B, C, T, H, W]; datasets and metric inputs are uint8, models take
float in [-1, 1] (see `pvdm.data.to_model_range`).
"""

__version__ = "0.1.0"
