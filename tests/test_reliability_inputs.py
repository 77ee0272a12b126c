"""Hostile or malformed inputs: bounded work and memory, and one clear line instead of a
traceback (detector pickles, videos that grow part-way, checkpoint headers, pipeline.json)."""

from __future__ import annotations

import contextlib
import pickle
import signal
import struct
from collections.abc import Iterator

import av
import numpy as np
import pytest

from pvdm.errors import CheckpointError

# --- detector pickles -------------------------------------------------------------------------


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging when the block runs longer than `seconds`."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _i3d_like(params_value) -> dict:
    return {"params": {"Conv3d_1a_7x7": params_value}, "batch_stats": {}}


def test_a_pickle_of_shared_dicts_is_refused_at_once(tmp_path) -> None:
    from pvdm.metrics.fvd import load_i3d

    tree = {"kernel": 0}
    for _ in range(40):  # 40 levels of one dict under two keys: 2**40 paths, a few hundred bytes
        tree = {"a": tree, "b": tree}
    path = tmp_path / "i3d.ckpt"
    path.write_bytes(pickle.dumps(_i3d_like(tree), protocol=2))
    assert path.stat().st_size < 1000
    with _deadline(10), pytest.raises(CheckpointError, match="shared between entries"):
        load_i3d(path)


def _deep_pickle(levels: int) -> bytes:
    """A protocol-2 pickle of {"params": {"Conv3d_1a_7x7": {"a": {"a": ...}}}, "batch_stats": {}}
    with `levels` nested dicts, written op by op (pickle.dumps itself would recurse)."""

    def key(text: str) -> bytes:
        data = text.encode()
        return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE

    ops = b"\x80\x02}" + key("batch_stats") + b"}s" + key("params") + b"}" + key("Conv3d_1a_7x7")
    ops += (b"}" + key("a")) * levels + b"}" + b"s" * levels  # the chain, closed inside out
    return ops + b"ss."  # Conv3d_1a_7x7 into params, params into the root


def test_a_deeply_nested_pickle_is_one_error_not_a_recursion_error(tmp_path) -> None:
    from pvdm.metrics.fvd import load_i3d

    path = tmp_path / "i3d.ckpt"
    path.write_bytes(_deep_pickle(50_000))
    with pytest.raises(CheckpointError, match="nested more than 16 levels"):
        load_i3d(path)


# --- videos whose frames grow ---------------------------------------------------------------


def _growing_video(path, sizes: tuple[int, ...] = (16, 64)) -> None:
    """An MPEG-TS file of 4 frames at each size in turn (the decoder follows the change)."""
    parts = []
    for size in sizes:
        part = path.with_suffix(f".{size}.ts")
        with av.open(str(part), "w", format="mpegts") as container:
            stream = container.add_stream("mpeg2video", rate=8)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(4):
                image = np.full((size, size, 3), 40 * i, dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        parts.append(part.read_bytes())
    path.write_bytes(b"".join(parts))


def test_every_decoded_frame_is_held_to_the_size_limit(tmp_path, monkeypatch) -> None:
    import pvdm.data.decode as decode
    from pvdm.data.meta import ReadError

    path = tmp_path / "grows.ts"
    _growing_video(path)
    monkeypatch.setattr(decode, "MAX_FRAME_PIXELS", 32 * 32)
    info = decode.probe(path)  # the first frame is small: the probe passes
    assert (info.width, info.height) == (16, 16) and info.num_frames >= 6
    assert decode.read_frames(path, info, [0, 1]).shape == (2, 16, 16, 3)
    for resolution in (None, 8):
        with pytest.raises(ReadError, match="64x64 are too large"):
            decode.read_frames(path, info, [0, 5], resolution=resolution)
    with pytest.raises(ReadError, match="64x64 are too large"):
        decode.decode_all(path)
