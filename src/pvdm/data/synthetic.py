"""Built-in synthetic videos: textured shapes moving over drifting textured backgrounds.

Not part of the paper; it lets the demo and the tests run without files. Each video is a pure
function of (seed, split, index): 1-3 shapes of one kind (circle, square or triangle, the class
label) with striped textures, bouncing off the frame edges at varied speeds while squares and
triangles spin, over a two-colour wave background that drifts slowly. Edges are anti-aliased
and colours come from small palettes, so a tiny autoencoder learns it quickly, while motion
(position, spin, background drift) makes the temporal axis matter. Any frame is computed
directly from its time, so clips are as cheap to read at the end of a video as at the start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLASSES = ["circle", "square", "triangle"]

_SHAPE_COLOURS = np.array(
    [
        [230, 60, 50],
        [250, 200, 40],
        [60, 180, 75],
        [40, 120, 230],
        [240, 130, 30],
        [200, 70, 200],
    ],
    dtype=np.float32,
)
_BACKGROUND_COLOURS = np.array(
    [
        [30, 40, 70],
        [90, 110, 140],
        [40, 80, 50],
        [120, 100, 70],
        [70, 50, 90],
        [150, 150, 160],
    ],
    dtype=np.float32,
)
_SPLIT_CODES = {"train": 0, "test": 1}


@dataclass(frozen=True)
class _Shape:
    kind: int
    colour: np.ndarray
    radius: float  # fraction of the frame side
    start: tuple[float, float]  # centre at t = 0, (y, x) in [0, 1]
    velocity: tuple[float, float]  # frame sides per frame
    angle: float
    spin: float  # radians per frame
    stripe_period: float
    stripe_angle: float


@dataclass(frozen=True)
class _Scene:
    kind: int
    background: tuple[np.ndarray, np.ndarray]
    wave: tuple[float, float, float, float]  # freq_y, freq_x, phase, drift per frame
    shapes: tuple[_Shape, ...]


class SyntheticVideos:
    """`num_videos` procedural videos of `num_frames` frames at `resolution` x `resolution`."""

    classes = CLASSES

    def __init__(
        self,
        num_videos: int,
        num_frames: int,
        resolution: int,
        *,
        seed: int = 0,
        split: str = "train",
    ) -> None:
        self.num_videos = num_videos
        self.num_frames = num_frames
        self.resolution = resolution
        self.seed = seed
        self.split_code = _SPLIT_CODES.get(split, 0)

    def label(self, index: int) -> int:
        """Class index of video `index` (the kind of its shapes)."""
        return self._scene(index).kind

    def frames(self, index: int, indices: Sequence[int]) -> np.ndarray:
        """Frames `indices` of video `index` as uint8 `[T, H, W, 3]`."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"synthetic video {index} out of range 0..{self.num_videos - 1}")
        scene = self._scene(index)
        coords = (np.arange(self.resolution, dtype=np.float32) + 0.5) / self.resolution
        y, x = np.meshgrid(coords, coords, indexing="ij")
        return np.stack([self._render(scene, y, x, float(t)) for t in indices])

    def _scene(self, index: int) -> _Scene:
        rng = np.random.default_rng([self.seed, self.split_code, index])
        kind = int(rng.integers(len(CLASSES)))
        bg = rng.choice(len(_BACKGROUND_COLOURS), size=2, replace=False)
        wave = (
            float(rng.uniform(0.5, 2.0) * rng.choice([-1, 1])),
            float(rng.uniform(0.5, 2.0)),
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(0.05, 0.15) * rng.choice([-1, 1])),
        )
        shapes = []
        for _ in range(int(rng.integers(1, 4))):
            radius = float(rng.uniform(0.1, 0.2))
            speed = float(rng.uniform(0.01, 0.045))
            direction = float(rng.uniform(0, 2 * math.pi))
            shapes.append(
                _Shape(
                    kind=kind,
                    colour=_SHAPE_COLOURS[int(rng.integers(len(_SHAPE_COLOURS)))],
                    radius=radius,
                    start=(
                        float(rng.uniform(radius, 1 - radius)),
                        float(rng.uniform(radius, 1 - radius)),
                    ),
                    velocity=(speed * math.sin(direction), speed * math.cos(direction)),
                    angle=float(rng.uniform(0, 2 * math.pi)),
                    spin=float(rng.uniform(-0.08, 0.08)),
                    stripe_period=float(rng.uniform(0.5, 0.9)) * radius,
                    stripe_angle=float(rng.uniform(0, math.pi)),
                )
            )
        return _Scene(
            kind, (_BACKGROUND_COLOURS[bg[0]], _BACKGROUND_COLOURS[bg[1]]), wave, tuple(shapes)
        )

    def _render(self, scene: _Scene, y: np.ndarray, x: np.ndarray, t: float) -> np.ndarray:
        fy, fx, phase, drift = scene.wave
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * (fy * y + fx * x) + phase + 2 * math.pi * drift * t)
        c0, c1 = scene.background
        image = c0 * (1 - mix[..., None]) + c1 * mix[..., None]
        edge = float(self.resolution)  # mask slope: about one pixel of anti-aliasing
        for shape in scene.shapes:
            cy = _bounce(shape.start[0], shape.velocity[0], t, shape.radius)
            cx = _bounce(shape.start[1], shape.velocity[1], t, shape.radius)
            angle = shape.angle + shape.spin * t
            dy, dx = y - cy, x - cx
            # Coordinates in the shape's own (rotating) frame.
            u = dx * math.cos(angle) + dy * math.sin(angle)
            v = -dx * math.sin(angle) + dy * math.cos(angle)
            if shape.kind == 0:
                inside = shape.radius - np.sqrt(u * u + v * v)
            elif shape.kind == 1:
                inside = 0.8 * shape.radius - np.maximum(np.abs(u), np.abs(v))
            else:
                reach = np.maximum(
                    -v, np.maximum(v * 0.5 + u * 0.866, v * 0.5 - u * 0.866)
                )  # equilateral triangle: inradius = radius / 2
                inside = 0.5 * shape.radius - reach
            alpha = np.clip(inside * edge + 0.5, 0.0, 1.0)[..., None]
            along = u * math.cos(shape.stripe_angle) + v * math.sin(shape.stripe_angle)
            shade = 0.8 + 0.2 * np.sin(2 * math.pi * along / shape.stripe_period)
            colour = shape.colour * shade[..., None]
            image = image * (1 - alpha) + colour * alpha
        return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _bounce(start: float, velocity: float, t: float, radius: float) -> float:
    """Position at time t of a point moving at `velocity` that reflects off [radius, 1-radius]."""
    low, length = radius, 1 - 2 * radius
    travelled = (start - low + velocity * t) % (2 * length)
    return low + (travelled if travelled <= length else 2 * length - travelled)
