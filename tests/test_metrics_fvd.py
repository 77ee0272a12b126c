"""FVD: the I3D port against the official golden outputs, loading, and FVD's behaviour on real clips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from einops import rearrange

from pvdm.errors import CheckpointError, WeightsError
from pvdm.metrics import frechet_distance
from pvdm.metrics.i3d import InceptionI3d, same_padding
from pvdm.metrics.i3d_detector import (
    TorchScriptI3D,
    i3d_features,
    is_torchscript_file,
    load_i3d,
    preprocess_i3d,
)
from pvdm.runtime import full_fp32_convs

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared/golden/official/i3d_fvd.safetensors"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    if not GOLDEN.is_file():
        pytest.skip(f"golden file {GOLDEN} is absent")
    from safetensors.torch import load_file

    return load_file(GOLDEN)


@pytest.fixture(scope="module")
def golden_state(golden) -> dict[str, torch.Tensor]:
    # Stored as float16 after rounding: float32 reproduces the official outputs exactly.
    return {k[len("state.") :]: v.float() for k, v in golden.items() if k.startswith("state.")}


@pytest.fixture(scope="module")
def golden_videos(golden) -> torch.Tensor:
    return rearrange(golden["input.videos_uint8_bthwc"], "b t h w c -> b c t h w").contiguous()


@pytest.fixture(scope="module")
def i3d(golden_state):
    return load_i3d(golden_state)


@pytest.fixture(scope="module")
def clean_feats(i3d, golden_videos) -> torch.Tensor:
    return i3d_features(i3d, golden_videos, batch_size=2)


def test_i3d_features_match_official_golden(golden, clean_feats) -> None:
    ref = golden["output.logits"]
    assert clean_feats.shape == (4, 400) and clean_feats.dtype == torch.float32
    assert rel_err(clean_feats, ref) <= 1e-5


def test_frechet_distance_matches_official_golden(golden) -> None:
    a, b, ref = golden["frechet.a"], golden["frechet.b"], golden["frechet.value"].item()
    assert abs(frechet_distance(a, b) - ref) <= 1e-6 * abs(ref)
    assert abs(frechet_distance(a.numpy(), b.float()) - ref) <= 1e-5 * abs(ref)


def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_noise(i3d, golden_videos, clean_feats):
    scale = clean_feats.double().var(dim=0).sum().item()
    assert abs(frechet_distance(clean_feats, clean_feats)) <= 1e-9 * scale
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(golden_videos.shape, generator=gen)
    fvds = []
    # Two clips per set keep the I3D cost down; the mean term still measures the shift.
    for sigma in (8.0, 40.0):
        noisy = (golden_videos[:2].float() + sigma * noise[:2]).round().clamp(0, 255)
        fvds.append(frechet_distance(clean_feats[:2], i3d_features(i3d, noisy.to(torch.uint8))))
    assert 0 < fvds[0] < fvds[1], fvds


def test_preprocess_resizes_short_side_and_centre_crops() -> None:
    # A 100x200 video whose left and right quarters differ: the centre crop keeps the middle.
    video = torch.zeros(1, 3, 9, 100, 200, dtype=torch.uint8)
    video[..., 50:150] = 255
    x = preprocess_i3d(video)
    assert x.shape == (1, 3, 9, 224, 224)
    # Resized to 224x448, cropped at columns 112..335: the white half (the outermost columns
    # blend with the black neighbours in the bilinear resize). Within float32 rounding: the
    # single-threaded resize kernel sums its weights to 1 - 2**-23, not exactly 1.
    assert (x[..., 1:-1] - 1.0).abs().max().item() <= 1e-6
    assert -1.0 < x[..., 0].max().item() < 1.0
    square = torch.randint(0, 256, (1, 3, 9, 64, 64), dtype=torch.uint8)
    plain = torch.nn.functional.interpolate(
        rearrange(square.float() / 255, "b c t h w -> (b t) c h w"),
        size=(224, 224),
        mode="bilinear",
        align_corners=False,
    )
    expected = rearrange(plain, "(b t) c h w -> b c t h w", b=1) * 2 - 1
    torch.testing.assert_close(preprocess_i3d(square), expected)


def test_same_padding_follows_tensorflow() -> None:
    assert same_padding(224, 7, 2) == (2, 3)  # even size: kernel - stride, extra at the end
    assert same_padding(7, 3, 2) == (1, 1)  # odd size: kernel - size % stride
    assert same_padding(16, 1, 1) == (0, 0)
    assert same_padding(2, 2, 2) == (0, 0)


def test_load_i3d_from_saved_state_dict_file(tmp_path, golden_state, i3d) -> None:
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save({k: v for k, v in golden_state.items() if "num_batches" not in k}, path)
    assert not is_torchscript_file(path)
    loaded = load_i3d(path)
    assert isinstance(loaded, InceptionI3d) and not loaded.training
    for (k, v), (k2, v2) in zip(loaded.state_dict().items(), i3d.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert not any(p.requires_grad for p in loaded.parameters())


def test_load_i3d_errors(tmp_path, golden_state) -> None:
    with pytest.raises(WeightsError, match=r"not_there\.pt"):
        load_i3d(tmp_path / "not_there.pt")
    state = dict(golden_state)
    state.pop("Mixed_4b.b0.conv3d.weight")
    with pytest.raises(CheckpointError, match=r"Mixed_4b\.b0\.conv3d\.weight"):
        load_i3d(state)
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_i3d(bad)


class _StandInDetector(torch.nn.Module):
    """Same call signature as StyleGAN-V's TorchScript I3D; its output encodes what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Parameter(torch.randn(3, 400))

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = False,
        resize: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise ValueError("expects uint8 videos")
        flags = 1.0 * float(rescale) + 10.0 * float(resize) + 100.0 * float(return_features)
        return x.float().mean(dim=(2, 3, 4)) @ self.proj + flags


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_detector_file_is_detected_and_called_like_stylegan_v(tmp_path) -> None:
    # Proves the file-type detection and the call (uint8 [B, C, T, H, W] passed through,
    # rescale/resize/return_features all True, chunking). It cannot prove anything about the
    # real i3d_torchscript.pt beyond its documented signature.
    torch.manual_seed(0)
    stand_in = _StandInDetector()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(stand_in), path)
    assert is_torchscript_file(path)
    detector = load_i3d(path, trust_code=True)
    assert isinstance(detector, TorchScriptI3D)
    videos = torch.randint(0, 256, (5, 3, 4, 8, 8), dtype=torch.uint8)
    feats = i3d_features(detector, videos, batch_size=2)
    expected = stand_in(videos, rescale=True, resize=True, return_features=True)
    torch.testing.assert_close(feats, expected.detach(), rtol=1e-5, atol=1e-4)
    # A bare ScriptModule goes through the same call.
    bare = i3d_features(torch.jit.load(path), videos)
    torch.testing.assert_close(bare, expected.detach(), rtol=1e-5, atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_detector_of_unknown_hash_is_refused_before_loading(tmp_path, monkeypatch):
    import pvdm.metrics.i3d_detector as fvd

    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_StandInDetector()), path)
    loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    with pytest.raises(WeightsError, match="TorchScript") as info:
        load_i3d(path)
    message = str(info.value)
    assert "--trust-detector-code" in message and "weights_only" not in message
    assert len(message.splitlines()) == 1 and loads == []  # its code never ran
    # A file whose digest pvdm knows is run without the flag.
    from pvdm.weights import file_sha256

    monkeypatch.setattr(fvd, "TRUSTED_TORCHSCRIPT_SHA256", frozenset({file_sha256(path)}))
    assert isinstance(load_i3d(path), TorchScriptI3D) and len(loads) == 1


def test_full_fp32_convs_turns_tf32_off_and_restores_it() -> None:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("torch < 2.9: the legacy allow_tf32 flag is used")
    before = conv.fp32_precision
    with full_fp32_convs(torch.device("cuda")):  # only sets flags: no GPU needed
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == before
    with full_fp32_convs(torch.device("cpu")):
        assert conv.fp32_precision == before


def test_i3d_features_rejects_float_videos(i3d) -> None:
    with pytest.raises(ValueError, match="uint8"):
        i3d_features(i3d, torch.zeros(1, 3, 16, 32, 32))


@pytest.mark.gpu
def test_i3d_features_on_cuda_match_cpu(golden_state, golden_videos, clean_feats) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    feats = i3d_features(load_i3d(golden_state, device="cuda"), golden_videos)
    assert feats.device.type == "cuda"
    assert rel_err(feats.cpu(), clean_feats) <= 1e-4  # TF32 may be on for cuDNN convolutions
