"""An infinite, shuffled, rank-sharded clip sampler that can start at any batch.

Plays the role of the official `InfiniteSampler` (StyleGAN2-ADA; reference §6.3) but keeps no
state: the clips of global batch `b` are a pure function of (seed, b), so resuming at step `s`
only needs `start_batch = s` (times the gradient-accumulation count) to see the same clips,
and the ranks of a distributed run split every global batch without overlap.

Global batch `b` covers stream positions `p = b * global_batch + j` for `j < global_batch`;
rank `r` takes `j` in `[r * local, (r + 1) * local)`. Position `p` is video
`perm(seed, p // N)[p % N]` (a fresh permutation of the `N` videos per epoch) with clip seed
`mix(seed, b, p)`, from which the dataset draws the start frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from pvdm.data.dataset import ClipRequest
from pvdm.errors import ConfigError
from pvdm.seeds import mix_seed

_PERMUTATION_TAG = 0x9E37
_CLIP_TAG = 0x7F4A


class ClipSampler(Sampler):
    """Yields this rank's `ClipRequest`s, batch after batch, forever."""

    def __init__(
        self,
        num_videos: int,
        global_batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        shuffle: bool = True,
    ) -> None:
        if num_videos < 1:
            raise ConfigError("the sampler needs at least one video")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in a world of {world_size} processes")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ConfigError(
                f"global batch size {global_batch_size} must be a positive multiple of the "
                f"{world_size} processes"
            )
        if start_batch < 0:
            raise ConfigError(f"start_batch must be 0 or more, got {start_batch}")
        self.num_videos = num_videos
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.shuffle = shuffle
        self._epoch = -1
        self._perm = np.arange(num_videos)

    def batch(self, b: int) -> list[ClipRequest]:
        """This rank's requests of global batch `b`."""
        first = b * self.global_batch_size + self.rank * self.local_batch_size
        return [self._request(b, p) for p in range(first, first + self.local_batch_size)]

    def __iter__(self) -> Iterator[ClipRequest]:
        b = self.start_batch
        while True:
            yield from self.batch(b)
            b += 1

    def _request(self, b: int, p: int) -> ClipRequest:
        epoch, offset = divmod(p, self.num_videos)
        if self.shuffle and epoch != self._epoch:
            rng = np.random.default_rng([_PERMUTATION_TAG, self.seed, epoch])
            self._perm = rng.permutation(self.num_videos)
            self._epoch = epoch
        index = int(self._perm[offset]) if self.shuffle else offset
        return ClipRequest(index, mix_seed(_CLIP_TAG, self.seed, b, p))
