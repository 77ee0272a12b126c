"""What scanning learns about a video (`Probe`), and the error for unreadable input.

Not in the official code, which keeps no metadata: it decodes each video whole per sample.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any


class ReadError(Exception):
    """A video or frame that cannot be read; the message is the reason, without the path."""


@dataclass(frozen=True)
class Probe:
    """What reading a video needs: size, frame count and (for files) a keyframe index.

    `keys` holds one `(frame_index, pts, dts)` per keyframe. In pts mode, frame `i` has the
    presentation timestamp `pts_first + i * pts_step` (constant frame rate) or `pts_table[i]`;
    with neither, frames are identified by counting.
    """

    kind: str  # "video" (a file PyAV decodes) or "frames" (a folder of images)
    num_frames: int
    height: int
    width: int
    fps: float
    keys: tuple[tuple[int, int | None, int | None], ...] = ()
    pts_first: int | None = None
    pts_step: int | None = None
    pts_table: tuple[int, ...] | None = None

    @property
    def has_pts(self) -> bool:
        return self.pts_step is not None or self.pts_table is not None

    def index_of_pts(self, pts: int | None) -> int | None:
        """The frame index of a decoded frame's pts, or None if no frame has that pts."""
        if pts is None:
            return None
        if self.pts_step is not None:
            offset = pts - self.pts_first
            index, rest = divmod(offset, self.pts_step)
            return index if rest == 0 and 0 <= index < self.num_frames else None
        if self.pts_table is not None:
            index = bisect.bisect_left(self.pts_table, pts)
            ok = index < len(self.pts_table) and self.pts_table[index] == pts
            return index if ok and index < self.num_frames else None
        return None

    def key_for(self, index: int) -> tuple[int, int | None, int | None] | None:
        """The last keyframe at or before frame `index`."""
        pos = bisect.bisect_right([k[0] for k in self.keys], index) - 1
        return self.keys[pos] if pos >= 0 else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (the scan cache stores these)."""
        return {
            "kind": self.kind,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "fps": self.fps,
            "keys": [list(k) for k in self.keys],
            "pts_first": self.pts_first,
            "pts_step": self.pts_step,
            "pts_table": list(self.pts_table) if self.pts_table is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Probe:
        """Inverse of `to_json`."""
        table = data.get("pts_table")
        return cls(
            kind=str(data["kind"]),
            num_frames=int(data["num_frames"]),
            height=int(data["height"]),
            width=int(data["width"]),
            fps=float(data["fps"]),
            keys=tuple((int(k[0]), k[1], k[2]) for k in data.get("keys", ())),
            pts_first=data.get("pts_first"),
            pts_step=data.get("pts_step"),
            pts_table=tuple(table) if table is not None else None,
        )


def reason_of(e: BaseException) -> str:
    """A short one-line reason from an exception (FFmpeg, OS or PIL)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(text))
    return text.split(": '")[0].strip().rstrip(".")
