"""Synthetic videos: deterministic from the seed, different across seeds, smooth real motion."""

from __future__ import annotations

import numpy as np

from pvdm.data import SyntheticVideos


def test_deterministic_and_random_access() -> None:
    a = SyntheticVideos(8, 32, 48, seed=5).frames(3, range(32))
    b = SyntheticVideos(8, 32, 48, seed=5).frames(3, range(32))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == (32, 48, 48, 3)
    np.testing.assert_array_equal(SyntheticVideos(8, 32, 48, seed=5).frames(3, [7, 20]), a[[7, 20]])


def test_seeds_splits_and_videos_differ() -> None:
    base = SyntheticVideos(4, 8, 32, seed=0).frames(0, range(8))
    other_seed = SyntheticVideos(4, 8, 32, seed=1).frames(0, range(8))
    other_split = SyntheticVideos(4, 8, 32, seed=0, split="test").frames(0, range(8))
    other_video = SyntheticVideos(4, 8, 32, seed=0).frames(1, range(8))
    for other in (other_seed, other_split, other_video):
        assert np.abs(base.astype(int) - other).mean() > 10


def test_motion_is_smooth_but_present() -> None:
    videos = SyntheticVideos(12, 16, 64, seed=0)
    step, far, across = [], [], []
    for i in range(12):
        x = videos.frames(i, range(16)).astype(np.float64)
        step.append(np.abs(x[1:] - x[:-1]).mean())
        far.append(np.abs(x[15] - x[0]).mean())
        across.append(np.abs(x[0] - videos.frames((i + 1) % 12, [0])[0]).mean())
    assert min(step) > 0.2  # every video moves from frame to frame
    assert np.mean(step) < np.mean(far)  # ... smoothly: neighbours closer than distant frames
    assert np.mean(far) < np.mean(across)  # and a video stays itself


def test_labels_cover_the_classes() -> None:
    videos = SyntheticVideos(30, 4, 16, seed=0)
    labels = [videos.label(i) for i in range(30)]
    assert set(labels) == {0, 1, 2} and videos.classes == ["circle", "square", "triangle"]
