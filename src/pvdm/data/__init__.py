"""Video data: decoding, datasets (UCF-101, SkyTimelapse, folders, synthetic), clips, writing.

The official code's data pipeline is `tools/dataloader.py` and `tools/data_utils.py`
(reference §6). Clips are uint8 `[C, T, H, W]` (batches `[B, C, T, H, W]`); `to_model_range`
maps them to the models' float [-1, 1].
"""

from pvdm.data.config import DataConfig
from pvdm.data.dataset import (
    ClipRequest,
    VideoDataset,
    build_dataset,
    open_dataset,
    open_heldout,
    read_video,
)
from pvdm.data.decode import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ReadError
from pvdm.data.loader import (
    ClipLoader,
    collate,
    eval_clips,
    eval_requests,
    make_loader,
    split_clips,
)
from pvdm.data.sampler import ClipSampler
from pvdm.data.scan import VideoInfo, index_dir
from pvdm.data.synthetic import SyntheticVideos
from pvdm.data.transform import center_crop_resize, from_model_range, to_model_range
from pvdm.data.write import tile_videos, write_video

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ClipLoader",
    "ClipRequest",
    "ClipSampler",
    "DataConfig",
    "ReadError",
    "SyntheticVideos",
    "VideoDataset",
    "VideoInfo",
    "build_dataset",
    "center_crop_resize",
    "collate",
    "eval_clips",
    "eval_requests",
    "from_model_range",
    "index_dir",
    "make_loader",
    "open_dataset",
    "open_heldout",
    "read_video",
    "split_clips",
    "tile_videos",
    "to_model_range",
    "write_video",
]
