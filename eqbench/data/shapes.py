"""Built-in ``shapes``: seeded scenes of coloured shapes on photo textures, with masks and boxes.

Each scene is a square crop of a built-in photograph (:mod:`eqbench.data.photos`; the train split
uses the train photos, the test split the test photos, so the splits share no background) with 1
to :data:`MAX_SHAPES` filled shapes painted over it, later shapes occluding earlier ones. Classes
are :data:`CLASSES` (0 = background). Each shape has a random class, centre, radius, rotation and
a random colour, so the class must be read from the outline, not the colour.

Foreground and background differ by a low-level cue that any encoder keeps, raw pixels and random
networks included: the photo is dimmed to :data:`BACKGROUND_GAIN` of its brightness (a dark
texture), while shapes are solid, bright and saturated fills (HSV value in :data:`SHAPE_VALUE`).
Without it (version 1: full-brightness photos, colours of any brightness) shape and background
were not separable from RGB, and the frozen linear segmentation probe of a random ViT or of raw
pixels did no better than predicting the background everywhere. Telling the *classes* apart
still needs the outline.

Scene ``i`` of a split is drawn from a numpy ``Generator`` seeded with ``(seed, split, i,
GENERATOR_VERSION)``: it depends on those only, not on ``n`` or the rendering size. Shapes are
polygons in normalised coordinates, rasterised at whatever size is asked for (a pixel belongs to
a shape when its centre lies inside the polygon), so the masks agree with the image at any size.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.path import Path as PolygonPath
from torch import Tensor

from eqbench.data.base import DATASETS, refuse_path, resize_square, split_size
from eqbench.data.dense import Instance, SegmentationDataset, mask_box
from eqbench.data.photos import PHOTO_NAMES, load_photo, photos_fingerprint, split_photos

#: Bumped whenever scene sampling or rendering changes (expires cached features).
GENERATOR_VERSION = 2
#: Class names; the index is the mask value.
CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle", "star", "cross")
MAX_SHAPES = 3
#: Shape radius as a fraction of the image side.
RADIUS = (0.16, 0.34)
#: Factor applied to the background photo's pixel values (a dim texture behind bright shapes).
BACKGROUND_GAIN = 0.4
#: HSV saturation and value ranges of the shape fills.
SHAPE_SATURATION = (0.5, 0.9)
SHAPE_VALUE = (0.85, 1.0)
#: Background crop side as a fraction of the photo's shorter side.
CROP_SCALE = (0.3, 0.8)
DEFAULT_N = {"train": 1000, "test": 200}


def _star(points: int, inner: float) -> np.ndarray:
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _regular(sides: int, phase: float) -> np.ndarray:
    angles = phase + np.arange(sides) * 2 * np.pi / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


_W = 0.33
#: Unit outlines (radius 1, centred at 0) of the classes 1..5, counter-clockwise.
OUTLINES: dict[str, np.ndarray] = {
    "circle": _regular(48, 0.0),
    "square": _regular(4, np.pi / 4),
    "triangle": _regular(3, np.pi / 2),
    "star": _star(5, 0.45),
    "cross": np.array(
        [
            (_W, 1), (_W, _W), (1, _W), (1, -_W), (_W, -_W), (_W, -1),
            (-_W, -1), (-_W, -_W), (-1, -_W), (-1, _W), (-_W, _W), (-_W, 1),
        ],
        dtype=np.float64,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """One shape of a scene, in normalised image coordinates (x right, y down, in [0, 1])."""

    category: int
    cx: float
    cy: float
    radius: float
    angle: float
    colour: tuple[int, int, int]

    def polygon(self) -> np.ndarray:
        """Vertices ``(V, 2)`` as ``(x, y)`` in normalised coordinates."""
        unit = OUTLINES[CLASSES[self.category]]
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = unit @ np.array([[c, s], [-s, c]])
        return rot * self.radius + np.array([self.cx, self.cy])


@dataclass(frozen=True)
class Scene:
    """A background crop ``(photo, top, left, side)`` and the shapes painted over it."""

    photo: str
    top: int
    left: int
    side: int
    shapes: tuple[Shape, ...]


def _inside(polygon: np.ndarray, size: int) -> np.ndarray:
    """``(size, size)`` bool: pixel centres inside ``polygon`` (normalised coordinates)."""
    centres = (np.arange(size) + 0.5) / size
    xx, yy = np.meshgrid(centres, centres)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    return PolygonPath(polygon).contains_points(points).reshape(size, size)


class ShapeScenes(SegmentationDataset):
    """Seeded shape scenes (see the module docstring).

    Args:
        split: ``train`` or ``test``.
        n: number of scenes.
        seed: scene seed.
    """

    def __init__(self, split: str, n: int, seed: int) -> None:
        self.name = "shapes"
        self.split = split
        self.n = n
        self.seed = seed
        self.classes = list(CLASSES)
        self.num_classes = len(CLASSES)
        self.photos = split_photos(split, n, "shapes")
        self.scenes = [self._sample(i) for i in range(n)]
        # one label per scene for the ImageDataset interface: the class of its largest shape
        self.labels = np.array(
            [max(s.shapes, key=lambda sh: sh.radius).category for s in self.scenes],
            dtype=np.int64,
        )
        self.groups = np.array([PHOTO_NAMES.index(s.photo) for s in self.scenes], dtype=np.int64)

    def _sample(self, i: int) -> Scene:
        words = [self.seed & 0xFFFFFFFFFFFFFFFF, int(self.split == "test"), i, GENERATOR_VERSION]
        rng = np.random.default_rng(np.random.SeedSequence(words))
        photo = self.photos[int(rng.integers(len(self.photos)))]
        height, width = load_photo(photo).shape[:2]
        side = max(1, int(rng.uniform(*CROP_SCALE) * min(height, width)))
        top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        shapes = []
        for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
            radius = float(rng.uniform(*RADIUS))
            hue = rng.uniform(0, 1)
            sat, val = rng.uniform(*SHAPE_SATURATION), rng.uniform(*SHAPE_VALUE)
            rgb = colorsys.hsv_to_rgb(hue, sat, val)
            shapes.append(
                Shape(
                    category=int(rng.integers(1, len(CLASSES))),
                    cx=float(rng.uniform(radius, 1 - radius)),
                    cy=float(rng.uniform(radius, 1 - radius)),
                    radius=radius,
                    angle=float(rng.uniform(0, 2 * np.pi)),
                    colour=(round(255 * rgb[0]), round(255 * rgb[1]), round(255 * rgb[2])),
                )
            )
        return Scene(photo, top, left, side, tuple(shapes))

    def render(self, i: int, size: int) -> tuple[Tensor, np.ndarray]:
        """Scene ``i`` at ``size``: image ``(3, S, S)`` uint8 and instance ids ``(S, S)`` int64
        (0 = background, ``k`` = the ``k``-th shape of the scene, 1-based)."""
        scene = self.scenes[i]
        crop = load_photo(scene.photo)[
            scene.top : scene.top + scene.side, scene.left : scene.left + scene.side
        ]
        image = resize_square(torch.from_numpy(np.array(crop)).permute(2, 0, 1)[None], size)[0]
        ids = np.zeros((size, size), dtype=np.int64)
        for k, shape in enumerate(scene.shapes, start=1):
            ids[_inside(shape.polygon(), size)] = k
        pixels = (image.permute(1, 2, 0).float() * BACKGROUND_GAIN).round().to(torch.uint8).numpy()
        for k, shape in enumerate(scene.shapes, start=1):
            pixels[ids == k] = shape.colour
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), ids

    def semantic(self, i: int, ids: np.ndarray) -> np.ndarray:
        """Class map from the instance-id map of scene ``i``."""
        lut = np.array([0, *(s.category for s in self.scenes[i].shapes)], dtype=np.int64)
        return lut[ids]

    def instances(self, i: int, size: int) -> list[Instance]:
        """The visible shapes of scene ``i`` rendered at ``size`` (fully occluded ones dropped)."""
        _, ids = self.render(i, size)
        out = []
        for k, shape in enumerate(self.scenes[i].shapes, start=1):
            mask = ids == k
            if mask.any():
                out.append(Instance(shape.category, mask, mask_box(mask)))
        return out

    def load_pair(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        images = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        masks = torch.empty((len(indices), size, size), dtype=torch.int64)
        for row, i in enumerate(indices):
            image, ids = self.render(int(i), size)
            images[row] = image
            masks[row] = torch.from_numpy(self.semantic(int(i), ids))
        return images, masks

    def fingerprint(self) -> dict[str, Any]:
        return photos_fingerprint(
            self.name, self.split, self.n, self.seed, self.photos, GENERATOR_VERSION
        )


@DATASETS.register(
    "shapes",
    description=(
        "Built-in, no PATH: seeded scenes of circles, squares, triangles, stars and crosses "
        "over crops of the built-in photos, with semantic masks (0 = background), instance "
        f"masks and boxes; n = number of scenes (default {DEFAULT_N['train']} train / "
        f"{DEFAULT_N['test']} test). Export: `eqbench data export shapes`."
    ),
)
def shapes(path: str | None, split: str, n: int | None, seed: int) -> SegmentationDataset:
    """Factory of the built-in ``shapes`` dataset (``path`` must be ``None``)."""
    refuse_path(
        "shapes",
        path,
        ", or export it with `eqbench data export shapes` and read it back as coco:DIR or "
        "ade20k:DIR",
    )
    return ShapeScenes(split, split_size(split, n, DEFAULT_N, "shape scenes"), seed)
