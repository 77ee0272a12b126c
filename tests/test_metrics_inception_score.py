"""Video Inception Score: known answers of the formula, and the C3D path end to end on random weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pvdm.errors import CheckpointError
from pvdm.metrics import c3d_probs, inception_score, load_c3d
from pvdm.metrics.c3d import CONVS, FCS

MEAN_FILE = Path(__file__).resolve().parents[1].parent / "shared/weights/c3d/mean2.npz"


def test_uniform_predictions_score_one() -> None:
    mean, std = inception_score(np.full((100, 101), 1 / 101))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_confident_distinct_predictions_over_k_classes_score_k() -> None:
    k = 5
    probs = np.eye(k)[np.arange(100) % k]  # each split of 10 holds every class twice
    mean, std = inception_score(probs, num_splits=10, shuffle_seed=None)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_hand_computed_split_scores() -> None:
    # One split: p1 = (1, 0), p2 = (.5, .5); marginal (.75, .25).
    kl1 = math.log(1 / 0.75)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    mean, _ = inception_score([[1.0, 0.0], [0.5, 0.5]], num_splits=1, shuffle_seed=None)
    assert mean == pytest.approx(math.exp((kl1 + kl2) / 2), rel=1e-12)
    # Two splits scoring 2 and 1: mean 1.5, population std 0.5.
    probs = np.concatenate([np.eye(2)[np.arange(10) % 2], np.tile([[1.0, 0.0]], (10, 1))])
    mean, std = inception_score(probs, num_splits=2, shuffle_seed=None)
    assert (mean, std) == (pytest.approx(1.5), pytest.approx(0.5))


def test_shuffle_is_stylegan_v_numpy_seed_42() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(7), size=40)
    perm = np.random.RandomState(42).permutation(40)
    assert inception_score(probs, 4) == inception_score(probs[perm], 4, shuffle_seed=None)
    assert inception_score(probs, 4) != inception_score(probs, 4, shuffle_seed=None)


def test_too_few_samples() -> None:
    with pytest.raises(ValueError, match="N >= 10"):
        inception_score(np.full((5, 3), 1 / 3))


@pytest.fixture(scope="module")
def c3d_files(tmp_path_factory):
    """A random `conv3d_deepnetA_ucf.npz` with TGANv2's keys and shapes, and the real mean."""
    if not MEAN_FILE.is_file():
        pytest.skip(f"C3D mean file {MEAN_FILE} is absent")
    rng = np.random.default_rng(0)
    arrays = {}
    for name, (c_in, c_out) in CONVS.items():
        std = math.sqrt(2.0 / (c_in * 27))  # He init keeps activations in range across layers
        arrays[f"{name}/W"] = (rng.standard_normal((c_out, c_in, 3, 3, 3)) * std).astype("f4")
        arrays[f"{name}/b"] = rng.standard_normal(c_out).astype("f4") * 0.01
    for name, (n_in, n_out) in FCS.items():
        std = math.sqrt(2.0 / n_in)
        arrays[f"{name}/W"] = (rng.standard_normal((n_out, n_in), np.float32) * std).astype("f4")
        arrays[f"{name}/b"] = np.zeros(n_out, np.float32)
    path = tmp_path_factory.mktemp("c3d") / "conv3d_deepnetA_ucf.npz"
    np.savez(path, **arrays)
    return path, arrays


@pytest.fixture(scope="module")
def c3d(c3d_files):
    return load_c3d(c3d_files[0], MEAN_FILE)


def test_c3d_end_to_end_matches_hand_built_network(c3d_files, c3d) -> None:
    _, arrays = c3d_files
    gen = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (1, 3, 16, 64, 64), generator=gen, dtype=torch.uint8)
    probs = c3d_probs(c3d, videos)
    assert probs.shape == (1, 101)
    torch.testing.assert_close(probs.sum(1), torch.ones(1))

    # Independent re-computation from the npz arrays, following TGANv2's layer list.
    w = {k: torch.from_numpy(v) for k, v in arrays.items()}
    mean = torch.from_numpy(np.load(MEAN_FILE)["mean"]).float()
    x = (videos.float() / 127.5 - 1.0).flip(1) * 128.0  # BGR
    frames = x[0].transpose(0, 1)  # [16, 3, 64, 64]
    frames = F.interpolate(frames, size=(112, 112), mode="bilinear", align_corners=True)
    h = frames.transpose(0, 1)[None] + 128.0 - mean[:, :, 8:120, 8:120]
    pools = {"conv1a": (1, 2, 2), "conv2a": 2, "conv3b": 2, "conv4b": 2, "conv5b": 2}
    for name in CONVS:
        h = F.relu(F.conv3d(h, w[f"{name}/W"], w[f"{name}/b"], padding=1))
        if name in pools:
            h = F.max_pool3d(h, pools[name], pools[name], ceil_mode=True)
    assert h.shape == (1, 512, 1, 4, 4)  # Chainer's cover_all pooling: 7 -> 4
    h = F.relu(h.reshape(1, -1) @ w["fc6/W"].T + w["fc6/b"])
    h = F.relu(h @ w["fc7/W"].T + w["fc7/b"])
    logits = h @ w["fc8/W"].T + w["fc8/b"]
    torch.testing.assert_close(probs, torch.softmax(logits, 1), rtol=1e-4, atol=1e-6)
    # The scores of such probabilities are those of the formula (one split of one video: 1).
    assert inception_score(probs, num_splits=1) == (pytest.approx(1.0), 0.0)


def test_c3d_preprocessing_known_answer(c3d) -> None:
    # A constant RGB video u maps to 128 * u / 127.5 in BGR order minus the mean's 8:120 crop.
    rgb = torch.tensor([10.0, 100.0, 250.0])
    video = rgb.view(1, 3, 1, 1, 1).expand(1, 3, 16, 40, 56).to(torch.uint8)
    x = c3d.preprocess(video.float() / 127.5 - 1.0)
    mean = torch.from_numpy(np.load(MEAN_FILE)["mean"]).float()
    expected = (128.0 * rgb.flip(0) / 127.5).view(3, 1, 1, 1) - mean[:, :, 8:120, 8:120]
    torch.testing.assert_close(x[0], expected, rtol=1e-5, atol=1e-3)


def test_c3d_loading_errors(tmp_path) -> None:
    if not MEAN_FILE.is_file():
        pytest.skip(f"C3D mean file {MEAN_FILE} is absent")
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"conv1a/W": np.zeros((64, 3, 3, 3, 3), np.float32)})
    with pytest.raises(CheckpointError, match="conv1a/b"):
        load_c3d(bad, MEAN_FILE)
