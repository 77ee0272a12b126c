"""PVDMPipeline with stub networks: long videos re-encode each clip's frames by default, and a
sample does not depend on the batch it was drawn in, also for the stochastic samplers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pvdm.diffusion import PVDMPipeline
from pvdm.models.latent import LatentShape, TriplaneLatent

SHAPE = LatentShape(channels=1, frames=2, height=3, width=3)


class StubAutoencoder(nn.Module):
    """encode: every latent value is the clip's mean + 0.5; decode: every pixel is hw's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(frames=2, resolution=4)

    def latent_shape(self) -> LatentShape:
        return SHAPE

    def encode(self, x: torch.Tensor) -> TriplaneLatent:
        value = x.float().mean(dim=(1, 2, 3, 4)).view(-1, 1, 1) + 0.5
        return TriplaneLatent.unpack(value.expand(-1, 1, SHAPE.num_tokens).clone(), SHAPE)

    def decode(self, z: TriplaneLatent) -> torch.Tensor:
        value = z.hw.float().mean(dim=(1, 2, 3)).clamp(-1, 1).view(-1, 1, 1, 1, 1)
        return value.expand(-1, 3, self.config.frames, 4, 4).clone()


class StubUNet(nn.Module):
    """eps = 0.1 x + 0.05 cond, per sample; records the condition of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.1))
        self.config = SimpleNamespace(num_classes=None)
        self.conds: list[torch.Tensor | None] = []

    def forward(self, x, t, cond=None):
        self.conds.append(None if cond is None else cond.pack().clone())
        return x * self.scale if cond is None else x * self.scale + cond * 0.05


def _pipe() -> PVDMPipeline:
    return PVDMPipeline(StubUNet(), StubAutoencoder())


@pytest.mark.parametrize("reencode", [True, False])
def test_long_videos_condition_on_the_reencoded_previous_clip(reencode) -> None:
    pipe = _pipe()
    first = pipe.sample_latents([0], 0, sampler="ddim", steps=2)
    pipe.unet.conds.clear()
    kwargs = {} if reencode else {"reencode": False}  # re-encoding is the default
    video = pipe(1, 4, seed=0, sampler="ddim", steps=2, progress=False, **kwargs)
    assert video.shape == (1, 3, 4, 4, 4)
    conds = pipe.unet.conds
    assert len(conds) == 4 and conds[0] is None and conds[1] is None  # clip 0: 2 steps
    reencoded = pipe.encode(pipe.decode(first)).pack()
    assert not torch.allclose(reencoded, first.pack())
    expected = reencoded if reencode else first.pack()
    for cond in conds[2:]:
        torch.testing.assert_close(cond, expected)


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", None), ("ddim", 5)])
def test_stochastic_samples_do_not_depend_on_the_batch(sampler, steps) -> None:
    pipe = _pipe()
    together = pipe.sample_latents([3, 4, 5], 1, sampler=sampler, steps=steps, eta=1.0).pack()
    alone = pipe.sample_latents([4], 1, sampler=sampler, steps=steps, eta=1.0).pack()
    torch.testing.assert_close(together[1:2], alone, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(together[0], together[1])


def test_latent_scale_scales_the_condition_and_unscales_the_sample() -> None:
    """latent_scale s: the UNet sees s * cond, samples x0 clamped to [-s, s], returns x0 / s."""
    from pvdm.diffusion.samplers import ddim_sample, make_denoiser

    cond = TriplaneLatent.unpack(torch.full((1, 1, SHAPE.num_tokens), 0.4), SHAPE)
    plain = _pipe()
    scaled = PVDMPipeline(plain.unet, plain.autoencoder, latent_scale=2.0)
    z = scaled.sample_latents([7], 1, cond=cond, sampler="ddim", steps=3, eta=0.0)
    torch.testing.assert_close(scaled.unet.conds[-1], cond.pack() * 2.0)
    denoiser = make_denoiser(plain.unet, cond=cond * 2.0)
    expected = ddim_sample(denoiser, plain._noise([7], 1), plain.schedule, 3, eta=0.0, clip_x0=2.0)
    torch.testing.assert_close(z.pack(), expected.pack() / 2.0)
    # the unscaled pipeline clamps at 1: a different function of the same network
    unscaled = plain.sample_latents([7], 1, cond=cond * 2.0, sampler="ddim", steps=3, eta=0.0)
    assert not torch.allclose(unscaled.pack(), expected.pack())


def test_latent_scale_round_trips_through_pipeline_json(tmp_path) -> None:
    from pvdm.errors import PvdmError
    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    ae = TriplaneAutoencoder(autoencoder_preset("debug"))
    pipe = PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae, latent_scale=2.5)
    folder = pipe.save_pretrained(tmp_path / "pipe")
    assert PVDMPipeline.from_pretrained(folder).latent_scale == 2.5
    spec = (folder / "pipeline.json").read_text().replace("2.5", "-1")
    (folder / "pipeline.json").write_text(spec)
    with pytest.raises(PvdmError, match="latent_scale"):
        PVDMPipeline.from_pretrained(folder)
