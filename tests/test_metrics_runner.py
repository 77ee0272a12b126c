"""The protocol runner with cheap stand-in detectors: cache, FVD/IS values, recon, two ranks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from eval_helpers import (
    SHIFT_PSNR,
    ShiftAutoencoder,
    add_noise,
    real_clips,
    sky,
    stand_in_detector,
    write_frame_folders,
)

from pvdm.data import DataConfig
from pvdm.errors import ConfigError
from pvdm.metrics import PROTOCOLS, frechet_distance, inception_score, ssim
from pvdm.metrics.recon import evaluate_recon, reconstruct
from pvdm.metrics.runner import evaluate, reference_stats, resolve_protocol
from pvdm.metrics.sources import FolderVideos, RealClips

RES = 32
NUM = 10  # the smallest count isv allows; the stand-in detectors make it cheap


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Fake folders holding the very real clips the protocol draws, and a noisy copy."""
    root = tmp_path_factory.mktemp("fakes")
    clips = real_clips(NUM, RES)
    return {
        "same": write_frame_folders(root / "same", clips),
        "noisy": write_frame_folders(root / "noisy", add_noise(clips, 40.0)),
    }


class _Counting:
    """A fake source that counts the videos it hands out."""

    def __init__(self, inner) -> None:
        self.inner, self.videos = inner, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def batches(self, *args, **kwargs):
        for videos, index in self.inner.batches(*args, **kwargs):
            self.videos += videos.shape[0]
            yield videos, index


def _protocols(*names: str, num: int = NUM):
    return [resolve_protocol(PROTOCOLS[n], num=num, resolution=RES) for n in names]


def _data() -> DataConfig:
    return DataConfig(path=str(sky()), num_workers=0)


def test_resolve_protocol_renames_and_records() -> None:
    p = resolve_protocol(PROTOCOLS["fvd2048_16f"], num=64, split="all", resolution=128)
    assert (p.name, p.num_fake, p.num_real, p.real_split, p.resolution) == (
        "fvd64_16f",
        64,
        64,
        "all",
        128,
    )
    assert resolve_protocol(PROTOCOLS["isv2048_ucf"], split="test").real_split == "train"
    assert resolve_protocol(PROTOCOLS["fvd2048_16f"]) is PROTOCOLS["fvd2048_16f"]
    with pytest.raises(ConfigError, match="between 1 and 2048"):
        resolve_protocol(PROTOCOLS["fvd2048_16f"], num=5000)


def test_reference_stats_are_cached_per_detector_and_protocol(tmp_path, caplog) -> None:
    (protocol,) = _protocols("fvd2048_16f", num=4)
    real = RealClips.open(_data(), protocol)
    detector = stand_in_detector("fvd", "a")
    with caplog.at_level("INFO", logger="pvdm"):
        first, info = reference_stats(protocol, real, detector, cache_dir=tmp_path)
    assert detector.num_videos == 4 and info["cache"] == "miss" and info["clips"] == 4
    assert "computed and cached" in caplog.text
    cache_file = tmp_path / info["refstats"].split("/")[-1]
    mtime = cache_file.stat().st_mtime_ns

    caplog.clear()
    with caplog.at_level("INFO", logger="pvdm"):
        again, info = reference_stats(protocol, real, detector, cache_dir=tmp_path)
    assert detector.num_videos == 4, "a cache hit runs no video through the detector"
    assert info["cache"] == "hit" and "loaded from cache" in caplog.text
    assert cache_file.stat().st_mtime_ns == mtime
    for got, want in zip(again.mean_cov(0), first.mean_cov(0)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    other = stand_in_detector("fvd", "b")  # another detector file: another hash
    _, info = reference_stats(protocol, real, other, cache_dir=tmp_path)
    assert other.num_videos == 4 and info["cache"] == "miss"
    seeded = dataclasses.replace(protocol, seed=1)  # other clips: another protocol fingerprint
    _, info = reference_stats(seeded, RealClips.open(_data(), seeded), detector, cache_dir=tmp_path)
    assert detector.num_videos == 8 and info["cache"] == "miss"
    _, info = reference_stats(protocol, real, detector, cache_dir=tmp_path, use_cache=False)
    assert detector.num_videos == 12 and info["cache"] == "off"
    assert len(list(tmp_path.glob("fvd4_16f-*.npz"))) == 3


def test_fvd_of_the_real_clips_is_zero_and_noise_raises_it_and_is_matches(folders, tmp_path):
    protocols = _protocols("fvd2048_16f", "isv2048_ucf")
    detectors = {"fvd": stand_in_detector("fvd"), "isv": stand_in_detector("isv")}
    values = {}
    for name in ("same", "noisy"):
        fake = _Counting(FolderVideos.open(folders[name]))
        records = evaluate(
            protocols, fake=fake, data=_data(), detectors=detectors, cache_dir=tmp_path
        )
        values[name] = {r["metric"]: r for r in records}
        assert fake.videos == NUM  # FVD and IS shared one pass over the fakes
    # The reals went through the detector once (then came from the cache).
    assert detectors["isv"].num_videos == 2 * NUM
    assert detectors["fvd"].num_videos == 2 * NUM + NUM
    same, noisy = values["same"]["fvd10_16f"], values["noisy"]["fvd10_16f"]
    assert same["results"]["fvd10_16f"] == pytest.approx(0.0, abs=1e-9)
    assert noisy["results"]["fvd10_16f"] > 1.0
    assert (same["real"]["cache"], noisy["real"]["cache"]) == ("miss", "hit")

    # Known answers from the features directly.
    clips = real_clips(NUM, RES)
    noisy_clips = add_noise(clips, 40.0)
    feats = detectors["fvd"].extract
    want = frechet_distance(feats(clips), feats(noisy_clips), ddof=0)
    assert noisy["results"]["fvd10_16f"] == pytest.approx(want, rel=1e-9)
    isv = values["noisy"]["isv10_ucf"]
    mean, std = inception_score(detectors["isv"].extract(noisy_clips), 10)
    assert isv["results"] == {"isv10_ucf": pytest.approx(mean), "isv10_ucf_std": pytest.approx(std)}
    assert (isv["num_real"], isv["num_fake"]) == (0, NUM)


def test_evaluate_refuses_too_few_fakes_and_missing_data(folders) -> None:
    (protocol,) = _protocols("fvd2048_16f", num=NUM + 1)
    detectors = {"fvd": stand_in_detector()}
    with pytest.raises(Exception, match=f"holds {NUM} videos but fvd11_16f needs 11"):
        evaluate(
            [protocol], fake=FolderVideos.open(folders["same"]), data=_data(), detectors=detectors
        )
    (protocol,) = _protocols("fvd2048_16f")
    with pytest.raises(ConfigError, match="--data"):
        evaluate(
            [protocol], fake=FolderVideos.open(folders["same"]), data=None, detectors=detectors
        )


def test_reconstruction_metrics_known_answers(tmp_path) -> None:
    (protocol,) = _protocols("recon2048_16f", num=3)
    assert protocol.real_split == "test"
    ae = ShiftAutoencoder(frames=8)
    i3d = stand_in_detector("fvd")
    (record,) = evaluate_recon(
        protocol, autoencoder=ae, data=_data(), i3d=i3d, cache_dir=tmp_path, batch_size=2
    )
    assert ae.calls == 2 * 2  # two batches, two 8-frame chunks per 16-frame clip
    results = record["results"]
    assert results["psnr"] == pytest.approx(SHIFT_PSNR, rel=1e-5)
    clips = real_clips(3, RES, split="test")
    x = clips.float() / 127.5 - 1
    x_hat = reconstruct(ae, clips)
    assert results["ssim"] == pytest.approx(ssim(x, x_hat).item(), rel=1e-9)
    assert results["ssim"] < 1.0
    want = frechet_distance(
        i3d.extract(clips), i3d.extract(((x_hat + 1) * 127.5).to(torch.uint8)), ddof=0
    )
    # float32 features of batches of 2 against one batch of 3: the kernels' summation order may
    # differ with the batch and thread count, so the distances agree to float32 rounding
    assert results["rfvd"] == pytest.approx(want, rel=1e-6)
    assert "lpips" not in results and record["skipped"] == {
        "lpips": "no LPIPS weights given or cached"
    }
    assert (record["num_real"], record["real"]["split"], record["real"]["cache"]) == (
        3,
        "test",
        "miss",
    )
    (again,) = evaluate_recon(protocol, autoencoder=ae, data=_data(), i3d=i3d, cache_dir=tmp_path)
    assert again["real"]["cache"] == "hit" and again["results"]["rfvd"] == pytest.approx(want)
    with pytest.raises(ConfigError, match="12 frames cannot be cut into the autoencoder's 8"):
        reconstruct(ae, clips[:, :, :12])


# --- two ranks -------------------------------------------------------------------------------


def _run_all(fake_folder: str, cache_dir: str) -> list[dict]:
    protocols = _protocols("fvd2048_16f", "isv2048_ucf")
    detectors = {"fvd": stand_in_detector("fvd"), "isv": stand_in_detector("isv")}
    records = evaluate(
        protocols,
        fake=FolderVideos.open(fake_folder),
        data=_data(),
        detectors=detectors,
        cache_dir=cache_dir,
        batch_size=3,
    )
    (recon,) = _protocols("recon2048_16f", num=5)
    records += evaluate_recon(
        recon,
        autoencoder=ShiftAutoencoder(),
        data=_data(),
        i3d=detectors["fvd"],
        cache_dir=cache_dir,
        batch_size=2,
    )
    return records


def _values(records: list[dict]) -> dict[str, float]:
    return {f"{r['metric']}/{k}": v for r in records for k, v in r["results"].items()}


def _worker(rank: int, init_file: str, fake_folder: str, cache_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        first = _run_all(fake_folder, cache_dir)  # computes the reference statistics
        second = _run_all(fake_folder, cache_dir)  # reads them from the cache
        if rank == 0:
            caches = [r["real"]["cache"] for r in first + second if "real" in r]
            summary = {
                "first": _values(first),
                "second": _values(second),
                "caches": caches,
                "world": [r["world_size"] for r in first],
                "num_real": [r["num_real"] for r in first],
            }
            with open(out, "w") as f:
                json.dump(summary, f)
        else:
            assert first == [] and second == []
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes in a gloo group
def test_two_gloo_ranks_equal_one_process(folders, tmp_path) -> None:
    out = tmp_path / "rank0.json"
    args = (str(tmp_path / "pg"), str(folders["noisy"]), str(tmp_path / "cache2"), str(out))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    got = json.loads(out.read_text())
    single = _values(_run_all(str(folders["noisy"]), str(tmp_path / "cache1")))
    assert (
        set(got["first"])
        == set(single)
        == {
            "fvd10_16f/fvd10_16f",
            "isv10_ucf/isv10_ucf",
            "isv10_ucf/isv10_ucf_std",
            "recon5_16f/psnr",
            "recon5_16f/ssim",
            "recon5_16f/rfvd",
        }
    )
    for key, value in single.items():  # float32 features: equal to their rounding (see above)
        assert got["first"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
        assert got["second"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
    assert got["caches"] == ["miss", "miss", "hit", "hit"]
    assert got["world"] == [2, 2, 2] and got["num_real"] == [NUM, 0, 5]


def test_window_protocol_gives_the_drift_curve(tmp_path) -> None:
    # 32-frame fakes whose first window is the very real clips and whose second is noisy: the
    # curve is [0, FVD(noise)], against the reference of real 16-frame clips.
    drift = dataclasses.replace(PROTOCOLS["fvd2048_128f_window16f"], frames=32)
    (protocol,) = [resolve_protocol(drift, num=4, resolution=RES)]
    assert protocol.name == "fvd4_128f_window16f" and protocol.reference().frames == 16
    clips = real_clips(4, RES)
    noisy = add_noise(clips, 40.0)
    fake = FolderVideos.open(write_frame_folders(tmp_path / "fakes", torch.cat([clips, noisy], 2)))
    detector = stand_in_detector("fvd")
    (record,) = evaluate(
        [protocol], fake=fake, data=_data(), detectors={"fvd": detector}, cache_dir=tmp_path
    )
    curve = record["drift"]["fvd"]
    want = frechet_distance(detector.extract(clips), detector.extract(noisy), ddof=0)
    assert curve[0] == pytest.approx(0.0, abs=1e-9) and curve[1] == pytest.approx(want, rel=1e-9)
    results = record["results"]
    assert results["fvd4_128f_window16f"] == pytest.approx((curve[0] + curve[1]) / 2)
    assert results["fvd4_128f_window16f_w01"] == pytest.approx(curve[1])
    assert record["drift"]["window_start_frames"] == [0, 16] and record["num_fake"] == 4
