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
    first = pipe.sample_latents(pipe.resolve(sampler="ddim", steps=2), [0], 0)
    pipe.unet.conds.clear()
    kwargs = {} if reencode else {"reencode": False}  # re-encoding is the default
    video = pipe(frames=4, seed=0, sampler="ddim", steps=2, progress=False, **kwargs)
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
    request = pipe.resolve(sampler=sampler, steps=steps, eta=1.0)
    together = pipe.sample_latents(request, [3, 4, 5], 1).pack()
    alone = pipe.sample_latents(request, [4], 1).pack()
    torch.testing.assert_close(together[1:2], alone, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(together[0], together[1])


def test_latent_scale_scales_the_condition_and_unscales_the_sample() -> None:
    """latent_scale s: the UNet sees s * cond, samples x0 clamped to [-s, s], returns x0 / s."""
    from pvdm.diffusion.samplers import ddim_sample, make_denoiser

    cond = TriplaneLatent.unpack(torch.full((1, 1, SHAPE.num_tokens), 0.4), SHAPE)
    plain = _pipe()
    scaled = PVDMPipeline(plain.unet, plain.autoencoder, latent_scale=2.0)
    request = plain.resolve(sampler="ddim", steps=3, eta=0.0)
    z = scaled.sample_latents(request, [7], 1, cond=cond)
    torch.testing.assert_close(scaled.unet.conds[-1], cond.pack() * 2.0)
    denoiser = make_denoiser(plain.unet, cond=cond * 2.0)
    expected = ddim_sample(denoiser, plain._noise([7], 1), plain.schedule, 3, eta=0.0, clip_x0=2.0)
    torch.testing.assert_close(z.pack(), expected.pack() / 2.0)
    # the unscaled pipeline clamps at 1: a different function of the same network
    unscaled = plain.sample_latents(request, [7], 1, cond=cond * 2.0)
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


def test_the_callback_sees_every_step_of_every_clip_and_counts_guidance() -> None:
    pipe = _pipe()
    seen: list[dict] = []
    video = pipe(
        num=3, frames=4, sampler="ddim", steps=2, guidance=1.0, batch_size=2, progress=False,
        callback=seen.append,
    )  # fmt: skip
    assert video.shape == (3, 3, 4, 4, 4)
    # 2 batches (2 + 1 videos) x 2 clips x 2 steps
    where = [(i["batch"], i["clip"], i["step"]) for i in seen]
    assert where == [(b, k, s) for b in range(2) for k in range(2) for s in range(2)]
    assert all(i["total"] == 2 and i["num_clips"] == 2 and i["num_batches"] == 2 for i in seen)
    assert [i["fraction"] for i in seen] == [pytest.approx(n / 8) for n in range(1, 9)]
    # frame guidance costs a second network call on the conditioned clip 2 only
    assert [i["evaluations"] for i in seen] == [1, 2, 2, 4] * 2
    assert seen[-1]["x"].pack().shape == (1, 1, SHAPE.num_tokens)
    assert [i["t"] for i in seen[:2]] == [999, 499]


def test_raising_from_the_callback_stops_the_run() -> None:
    pipe = _pipe()

    class Stop(Exception):
        pass

    def stop_at_third(info: dict) -> None:
        if info["step"] == 2:
            raise Stop

    with pytest.raises(Stop):
        pipe(frames=2, steps=10, progress=False, callback=stop_at_third)
    assert len(pipe.unet.conds) == 3  # no network call after the stop


def test_class_names_that_are_numbers_are_names_first() -> None:
    from pvdm.errors import PvdmError

    unet = StubUNet()
    unet.config = SimpleNamespace(num_classes=3)
    pipe = PVDMPipeline(unet, StubAutoencoder(), classes=["1", "2", "3"])
    assert pipe.label_ids(["1"], 2).tolist() == [0, 0]  # folder "1" is class 0
    assert pipe.label_ids(["3", 1], 2).tolist() == [2, 1]  # a name, then an index
    with pytest.raises(PvdmError, match="class index 4 is out of range"):
        pipe.label_ids(["4"], 1)  # not a name: an index, and there is no class 4
    with pytest.raises(PvdmError, match="unknown class 'four'"):
        pipe.label_ids(["four"], 1)
    with pytest.raises(PvdmError, match="names 2 classes but the UNet has 3"):
        PVDMPipeline(unet, StubAutoencoder(), classes=["1", "2"])


@pytest.mark.parametrize(
    "schedule",
    ['{"linear_start": NaN}', '{"linear_start": 0.02, "linear_end": 0.01}',
     '{"num_timesteps": 1000000000}'],
)  # fmt: skip
def test_a_bad_schedule_in_pipeline_json_is_one_error(tmp_path, schedule) -> None:
    from pvdm.errors import PvdmError

    folder = _pipeline_json_with(tmp_path, "schedule", schedule)
    with pytest.raises(PvdmError, match="invalid 'schedule'"):
        PVDMPipeline.from_pretrained(folder)


@pytest.mark.parametrize("default_steps", ['{"ddim": 0}', '{"ddim": true}', "[2]", '{"ddim": 2.5}'])
def test_bad_default_steps_in_pipeline_json_are_one_error(tmp_path, default_steps) -> None:
    from pvdm.errors import PvdmError

    folder = _pipeline_json_with(tmp_path, "default_steps", default_steps)
    with pytest.raises(PvdmError, match="'default_steps' must map sampler names"):
        PVDMPipeline.from_pretrained(folder)


@pytest.mark.parametrize("default_sampler", ['"heun"', "3", '["ddim"]'])
def test_a_bad_default_sampler_in_pipeline_json_is_one_error(tmp_path, default_sampler) -> None:
    from pvdm.errors import PvdmError

    folder = _pipeline_json_with(tmp_path, "default_sampler", default_sampler)
    with pytest.raises(PvdmError, match="'default_sampler' must be one of"):
        PVDMPipeline.from_pretrained(folder)


def test_a_pipeline_default_sampler_fills_only_an_unset_sampler(tmp_path) -> None:
    pipe = PVDMPipeline.from_pretrained(_pipeline_json_with(tmp_path, "default_sampler", '"dpm"'))
    assert pipe.default_sampler == "dpm"
    assert (pipe.resolve().sampler, pipe.resolve().steps) == ("dpm", 20)
    assert pipe.resolve(sampler="ddim").sampler == "ddim"


def _pipeline_json_with(tmp_path, key: str, raw_json: str):
    """A saved random debug pipeline whose pipeline.json has `key` set to the text `raw_json`."""
    import json

    from pvdm.models import TriplaneAutoencoder, TriplaneUNet, autoencoder_preset, unet_preset

    ae = TriplaneAutoencoder(autoencoder_preset("debug"))
    folder = PVDMPipeline(TriplaneUNet(unet_preset("debug")), ae).save_pretrained(tmp_path / "p")
    spec = json.loads((folder / "pipeline.json").read_text())
    text = json.dumps({**spec, key: "@"}).replace('"@"', raw_json)
    (folder / "pipeline.json").write_text(text)
    return folder
