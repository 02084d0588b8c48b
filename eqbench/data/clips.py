"""Built-in ``shape_clips``: seeded videos of moving, occluding shapes over panning photo textures.

The offline default of the video label-propagation task (``video/davis``): each clip has
:data:`FRAMES` frames of :data:`FRAME_SIZE` pixels (DAVIS's 480p aspect ratio, 9:16) with exact
per-frame object masks in the DAVIS convention (0 = background, ``k`` = the ``k``-th object).

* Background: a crop of a built-in photograph (:mod:`eqbench.data.photos`; the test split uses
  the test photos, the train split the others), dimmed to :data:`BACKGROUND_GAIN` as in the
  ``shapes`` scenes, whose window pans in a straight line across the photo (camera motion).
* Objects: 2 to :data:`MAX_OBJECTS` filled outlines of the ``shapes`` dataset (circle, square,
  triangle, star, cross), each of its own bright saturated colour, moving at constant velocity
  (bouncing off the frame's edges) and spinning; later objects are drawn over earlier ones, so
  objects occlude each other as they cross.

Clip ``i`` of a split is drawn from a numpy ``Generator`` seeded with ``(seed, split, i,
GENERATOR_VERSION)``, so it does not depend on ``n``. A pixel belongs to an object when its centre
lies inside the object's polygon (as in :mod:`eqbench.data.shapes`), so masks are exact.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.path import Path as PolygonPath

from eqbench.data.base import DATASETS, refuse_path, split_size
from eqbench.data.photos import load_photo, photos_fingerprint, split_photos
from eqbench.data.shapes import BACKGROUND_GAIN, CLASSES, OUTLINES, SHAPE_SATURATION, SHAPE_VALUE
from eqbench.data.video import VideoDataset

#: Bumped whenever clip sampling or rendering changes (expires cached features).
GENERATOR_VERSION = 1
#: ``(height, width)`` of every frame.
FRAME_SIZE = (144, 256)
FRAMES = 20
MAX_OBJECTS = 3
#: Object radius as a fraction of the frame height.
RADIUS = (0.14, 0.26)
#: Object speed in frame heights per frame, and spin in radians per frame.
SPEED = (0.012, 0.03)
SPIN = 0.08
#: Background window height as a fraction of the photo's height, and its total pan as a fraction
#: of the window's size.
WINDOW_SCALE = (0.45, 0.7)
PAN = 0.3
DEFAULT_N = {"train": 16, "test": 8}


@dataclass(frozen=True)
class MovingShape:
    """One object: outline, start centre and velocity (in frame heights), size, spin, colour."""

    outline: str
    x: float
    y: float
    vx: float
    vy: float
    radius: float
    angle: float
    spin: float
    colour: tuple[int, int, int]

    def polygon(self, t: int, height: int, width: int) -> np.ndarray:
        """Vertices ``(V, 2)`` as pixel ``(x, y)`` in frame ``t``."""
        aspect = width / height
        cx = _bounce(self.x + self.vx * t, self.radius, aspect - self.radius)
        cy = _bounce(self.y + self.vy * t, self.radius, 1.0 - self.radius)
        angle = self.angle + self.spin * t
        c, s = math.cos(angle), math.sin(angle)
        rot = OUTLINES[self.outline] @ np.array([[c, s], [-s, c]])
        return (rot * self.radius + np.array([cx, cy])) * height


def _bounce(value: float, low: float, high: float) -> float:
    """``value`` reflected back and forth into ``[low, high]``."""
    span = high - low
    if span <= 0:
        return (low + high) / 2
    phase = (value - low) % (2 * span)
    return low + (phase if phase <= span else 2 * span - phase)


@dataclass(frozen=True)
class Clip:
    """A background photo, its panning window ``(top, left)`` → ``(top, left)`` of ``size``
    ``(h, w)``, and the objects."""

    photo: str
    start: tuple[float, float]
    end: tuple[float, float]
    window: tuple[int, int]
    shapes: tuple[MovingShape, ...]


def _inside(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(height, width)`` bool: pixel centres inside ``polygon`` (pixel coordinates)."""
    xx, yy = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    return PolygonPath(polygon).contains_points(points).reshape(height, width)


class ShapeClips(VideoDataset):
    """Seeded shape clips (see the module docstring).

    Args:
        split: ``train`` or ``test``.
        n: number of clips.
        seed: clip seed.
    """

    def __init__(self, split: str, n: int, seed: int) -> None:
        self.name = "shape_clips"
        self.split = split
        self.n = n
        self.seed = seed
        self.photos = split_photos(split, n, "shape_clips")
        self.clips = [self._sample(i) for i in range(n)]
        self.videos = [f"clip{i:04d}" for i in range(n)]
        self.lengths = [FRAMES] * n
        self._index()
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    def _sample(self, i: int) -> Clip:
        words = [self.seed & 0xFFFFFFFFFFFFFFFF, int(self.split == "test"), i, GENERATOR_VERSION]
        rng = np.random.default_rng(np.random.SeedSequence(words))
        photo = self.photos[int(rng.integers(len(self.photos)))]
        ph, pw = load_photo(photo).shape[:2]
        height, width = FRAME_SIZE
        wh = int(rng.uniform(*WINDOW_SCALE) * ph)
        ww = min(pw, round(wh * width / height))
        wh = min(wh, round(ww * height / width))
        room = (ph - wh, pw - ww)
        start = (rng.uniform(0, room[0]), rng.uniform(0, room[1]))
        heading = rng.uniform(0, 2 * np.pi)
        move = (PAN * wh * math.sin(heading), PAN * ww * math.cos(heading))
        end = (
            float(np.clip(start[0] + move[0], 0, room[0])),
            float(np.clip(start[1] + move[1], 0, room[1])),
        )
        aspect = width / height
        shapes = []
        for _ in range(int(rng.integers(2, MAX_OBJECTS + 1))):
            radius = float(rng.uniform(*RADIUS))
            speed, heading = float(rng.uniform(*SPEED)), float(rng.uniform(0, 2 * np.pi))
            rgb = colorsys.hsv_to_rgb(
                rng.uniform(0, 1), rng.uniform(*SHAPE_SATURATION), rng.uniform(*SHAPE_VALUE)
            )
            shapes.append(
                MovingShape(
                    outline=CLASSES[int(rng.integers(1, len(CLASSES)))],
                    x=float(rng.uniform(radius, aspect - radius)),
                    y=float(rng.uniform(radius, 1 - radius)),
                    vx=speed * math.cos(heading),
                    vy=speed * math.sin(heading),
                    radius=radius,
                    angle=float(rng.uniform(0, 2 * np.pi)),
                    spin=float(rng.uniform(-SPIN, SPIN)),
                    colour=(round(255 * rgb[0]), round(255 * rgb[1]), round(255 * rgb[2])),
                )
            )
        return Clip(photo, (float(start[0]), float(start[1])), end, (wh, ww), tuple(shapes))

    def render(self, video: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t`` of clip ``video``: ``(H, W, 3)`` uint8 and object ids ``(H, W)`` int64."""
        clip = self.clips[video]
        height, width = FRAME_SIZE
        u = t / max(1, FRAMES - 1)
        top = round(clip.start[0] + u * (clip.end[0] - clip.start[0]))
        left = round(clip.start[1] + u * (clip.end[1] - clip.start[1]))
        wh, ww = clip.window
        crop = np.array(load_photo(clip.photo)[top : top + wh, left : left + ww])
        pixels = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
        background = torch.nn.functional.interpolate(
            pixels, size=FRAME_SIZE, mode="bilinear", antialias=True, align_corners=False
        )[0]
        image = (background * BACKGROUND_GAIN).round().clamp(0, 255).to(torch.uint8)
        image_np = image.permute(1, 2, 0).numpy().copy()
        ids = np.zeros(FRAME_SIZE, dtype=np.int64)
        for k, shape in enumerate(clip.shapes, start=1):
            inside = _inside(shape.polygon(t, height, width), height, width)
            ids[inside] = k
            image_np[inside] = shape.colour
        return image_np, ids

    def _clip(self, video: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != video:
            rendered = [self.render(video, t) for t in range(FRAMES)]
            frames = np.stack([f for f, _ in rendered])
            masks = np.stack([m for _, m in rendered])
            self._cached = (video, frames, masks)
        return self._cached[1], self._cached[2]

    def frame(self, video: int, t: int) -> np.ndarray:
        return self._clip(video)[0][t]

    def mask(self, video: int, t: int) -> np.ndarray:
        return self._clip(video)[1][t]

    def frames(self, video: int) -> np.ndarray:
        return self._clip(video)[0]

    def masks(self, video: int) -> np.ndarray:
        return self._clip(video)[1]

    def fingerprint(self) -> dict[str, Any]:
        return photos_fingerprint(
            self.name, self.split, self.n, self.seed, self.photos, GENERATOR_VERSION
        )


@DATASETS.register(
    "shape_clips",
    description=(
        f"Built-in, no PATH: seeded {FRAMES}-frame videos ({FRAME_SIZE[1]}x{FRAME_SIZE[0]}) of "
        f"2-{MAX_OBJECTS} moving, spinning, occluding shapes over panning crops of the built-in "
        "photos, with exact DAVIS-style object masks; n = number of clips (default "
        f"{DEFAULT_N['train']} train / {DEFAULT_N['test']} test)."
    ),
)
def shape_clips(path: str | None, split: str, n: int | None, seed: int) -> VideoDataset:
    """Factory of the built-in ``shape_clips`` dataset (``path`` must be ``None``)."""
    refuse_path("shape_clips", path, ", or davis:PATH for DAVIS-2017")
    return ShapeClips(split, split_size(split, n, DEFAULT_N, "clips"), seed)
