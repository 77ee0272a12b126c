"""The data section of a run's config: where the videos are and what clips the model sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pvdm.errors import ConfigError

Layout = Literal["auto", "ucf101", "sky", "folder", "synthetic"]


@dataclass
class DataConfig:
    """Dataset location, layout and clip shape (official PVDM: 16 frames at 256, stride 1).

    `path` is a folder (UCF-101, SkyTimelapse, any folder of videos or frame folders), one
    video file, or "synthetic" for the built-in procedural videos. `split` is "train", "test"
    or "all" (train + test, the StyleGAN-V protocol for UCF-101); `fold` picks the UCF-101 split
    lists (1-3). `frames` is the clip length the model sees; the conditional diffusion stage
    asks for 2 * frames contiguous frames.
    """

    path: str = "synthetic"
    layout: Layout = "auto"
    split: str = "train"
    fold: int = 1
    resolution: int = 64
    frames: int = 16
    stride: int = 1
    num_workers: int = 2
    synthetic_videos: int = 256
    synthetic_frames: int = 64
    synthetic_seed: int = 0
    cache: bool = True

    def validate(self) -> None:
        """Raise `ConfigError` for values out of range."""
        if not self.path:
            raise ConfigError("data.path is empty; give a dataset folder or 'synthetic'")
        if not self.split:
            raise ConfigError("data.split is empty; use train, test or all")
        if not 1 <= self.fold <= 3:
            raise ConfigError(f"data.fold must be 1, 2 or 3 (UCF-101 split lists), got {self.fold}")
        if self.resolution < 8:
            raise ConfigError(f"data.resolution must be at least 8, got {self.resolution}")
        if self.frames < 1:
            raise ConfigError(f"data.frames must be positive, got {self.frames}")
        if self.stride < 1:
            raise ConfigError(f"data.stride must be positive, got {self.stride}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be 0 or more, got {self.num_workers}")
        if self.synthetic_videos < 1:
            raise ConfigError(
                f"data.synthetic_videos must be positive, got {self.synthetic_videos}"
            )
        if self.synthetic_frames < 1:
            raise ConfigError(
                f"data.synthetic_frames must be positive, got {self.synthetic_frames}"
            )
        if self.synthetic_seed < 0:
            raise ConfigError(f"data.synthetic_seed must be 0 or more, got {self.synthetic_seed}")
