"""Built-in ``depth_scenes``: rooms with spheres and boxes ray-cast with exact metric depth.

The offline default of the depth tasks (``depth/linear``): each image is :data:`IMAGE_SIZE`
pixels (NYU's 4:3) seen by a pinhole camera (horizontal field of view :data:`FOV_DEGREES`)
standing in a box-shaped room: a floor, a ceiling, a back wall 4 to 9.5 m away and two side
walls, with 1 to :data:`MAX_OBJECTS` spheres and boxes standing on the floor; the camera is
pitched and turned by a few degrees. Every surface carries a checker texture of its own colours
and period (laid out in world coordinates, so it shrinks with distance), shaded by the angle
between its normal and the ray. Each pixel's ray (through the pixel centre) is intersected with
every surface in closed form (planes, spheres, the slabs of boxes) and the nearest hit gives the
colour and the depth: ``z``-depth along the optical axis, as NYU's and KITTI's maps store it,
exact up to float32 and always below 10 m (NYU's cap).

Image ``i`` of a split is drawn from a numpy ``Generator`` seeded with ``(seed, split, i,
GENERATOR_VERSION)``, so it does not depend on ``n``; train and test use different ``split``
streams.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from eqbench.data.base import DATASETS, generated_sample_rng, generated_split_size
from eqbench.data.depth import DepthDataset

#: Bumped whenever scene sampling or rendering changes (expires cached features).
GENERATOR_VERSION = 1
#: ``(height, width)`` of every image.
IMAGE_SIZE = (120, 160)
FOV_DEGREES = 60.0
MAX_OBJECTS = 4
MAX_DEPTH = 10.0
DEFAULT_N = {"train": 400, "test": 100}


@dataclass(frozen=True)
class Surface:
    """A surface's texture: two colours (RGB in [0, 1]) and a checker period in metres."""

    light: tuple[float, float, float]
    dark: tuple[float, float, float]
    period: float


def random_surface(rng: np.random.Generator) -> Surface:
    """Two shades of a random hue and a checker period of 0.15 to 0.6 m."""
    hue, sat = float(rng.random()), float(rng.uniform(0.2, 0.9))
    light = colorsys.hsv_to_rgb(hue, sat, float(rng.uniform(0.7, 1.0)))
    dark = colorsys.hsv_to_rgb(hue, sat, float(rng.uniform(0.2, 0.5)))
    return Surface(light, dark, float(rng.uniform(0.15, 0.6)))


def camera_rays(
    height: int, width: int, fov_degrees: float, pitch: float, yaw: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rays through the pixel centres: ``(H·W, 3)`` world directions whose component along the
    optical axis is 1 (so the hit parameter ``t`` is the z-depth), and that axis ``(3,)``.
    World axes: x right, y down, z forward; ``pitch`` (down) and ``yaw`` (right) in radians."""
    focal = 0.5 * width / math.tan(math.radians(fov_degrees) / 2)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    cam = np.stack(
        [(u - width / 2) / focal, (v - height / 2) / focal, np.ones_like(u)], axis=-1
    ).reshape(-1, 3)
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    rot_x = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])  # positive pitch looks down (+y)
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot = rot_y @ rot_x
    return cam @ rot.T, rot @ np.array([0.0, 0.0, 1.0])


def render_scene(
    rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """One seeded scene: image ``(H, W, 3)`` uint8 and z-depth ``(H, W)`` float32 metres."""
    height, width = size
    cam_h = rng.uniform(1.0, 1.6)  # camera height above the floor (the floor is y = cam_h)
    ceiling = -(rng.uniform(2.5, 3.2) - cam_h)
    back = rng.uniform(4.0, 9.5)
    left, right = -rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0)
    pitch, yaw = math.radians(rng.uniform(0.0, 12.0)), math.radians(rng.uniform(-8.0, 8.0))
    dirs, _ = camera_rays(height, width, FOV_DEGREES, pitch, yaw)
    n = dirs.shape[0]
    best_t = np.full(n, np.inf)
    normal = np.zeros((n, 3))
    surface = np.zeros(n, dtype=np.int64)
    surfaces: list[Surface] = []

    def hit(t: np.ndarray, normals: np.ndarray) -> None:
        closer = (t > 1e-6) & (t < best_t)
        best_t[closer] = t[closer]
        normal[closer] = normals[closer] if normals.ndim == 2 else normals
        surface[closer] = len(surfaces)
        surfaces.append(random_surface(rng))

    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, value, sign in ((1, cam_h, -1), (1, ceiling, 1), (2, back, -1), (0, left, 1),
                                  (0, right, -1)):  # fmt: skip
            t = np.where(dirs[:, axis] != 0, value / dirs[:, axis], np.inf)
            hit(t, np.eye(3)[axis] * sign)
        for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            z = rng.uniform(1.5, back - 0.8)
            x = rng.uniform(left + 0.5, right - 0.5)
            if rng.random() < 0.5:  # a sphere on the floor
                r = rng.uniform(0.2, 0.6)
                centre = np.array([x, cam_h - r, z])
                b = dirs @ centre
                a = (dirs**2).sum(axis=1)
                disc = b**2 - a * (centre @ centre - r**2)
                t = np.where(disc >= 0, (b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
                points = dirs * t[:, None]
                hit(t, (points - centre) / r)
            else:  # an axis-aligned box on the floor
                half = rng.uniform(0.2, 0.6, size=2)
                lo = np.array([x - half[0], cam_h - rng.uniform(0.3, 1.4), z - half[1]])
                hi = np.array([x + half[0], cam_h, z + half[1]])
                t0, t1 = lo / dirs, hi / dirs
                near = np.minimum(t0, t1)
                t_in, t_out = near.max(axis=1), np.maximum(t0, t1).min(axis=1)
                t = np.where((t_in <= t_out) & (t_in > 0), t_in, np.inf)
                face = near.argmax(axis=1)
                normals = -np.eye(3)[face] * np.sign(dirs[np.arange(n), face])[:, None]
                hit(t, normals)
    points = dirs * best_t[:, None]
    image = shade(points, dirs, normal, surface, surfaces, rng).reshape(height, width, 3)
    return image, best_t.reshape(height, width).astype(np.float32)


def shade(
    points: np.ndarray,
    dirs: np.ndarray,
    normal: np.ndarray,
    surface: np.ndarray,
    surfaces: list[Surface],
    rng: np.random.Generator,
) -> np.ndarray:
    """uint8 ``(N, 3)`` colours: each surface's 3-D checker, Lambert-shaded, with slight noise."""
    light = np.array([s.light for s in surfaces])[surface]
    dark = np.array([s.dark for s in surfaces])[surface]
    period = np.array([s.period for s in surfaces])[surface]
    cells = np.floor(points / period[:, None] + 1e-4).astype(np.int64).sum(axis=1)
    colour = np.where((cells % 2 == 0)[:, None], light, dark)
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    lambert = np.abs((normal * unit).sum(axis=1))
    colour = colour * (0.3 + 0.7 * lambert)[:, None]
    colour = colour + rng.normal(0.0, 0.02, size=colour.shape)
    return (np.clip(colour, 0.0, 1.0) * 255).round().astype(np.uint8)


class DepthScenes(DepthDataset):
    """A split of the built-in scenes (see the module docstring)."""

    def __init__(self, split: str, n: int, seed: int) -> None:
        self.name, self.split, self.seed, self.n = "depth_scenes", split, seed, n
        self.min_depth, self.max_depth, self.crop = 1e-3, MAX_DEPTH, "none"
        self.labels = np.zeros(n, dtype=np.int64)
        self.groups = np.arange(n, dtype=np.int64)
        self.classes = ["depth"]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = generated_sample_rng(self.seed, self.split, index, GENERATOR_VERSION)
        return render_scene(rng)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "n": self.n,
            "seed": self.seed,
            "size": list(IMAGE_SIZE),
            "version": GENERATOR_VERSION,
        }


@DATASETS.register(
    "depth_scenes",
    description=(
        f"Built-in, no PATH: seeded {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]} renders of textured rooms "
        f"with 1-{MAX_OBJECTS} spheres and boxes and their exact z-depth in metres (< 10 m); "
        f"n = number of images (default {DEFAULT_N['train']} train / {DEFAULT_N['test']} test)."
    ),
)
def depth_scenes(path: str | None, split: str, n: int | None, seed: int) -> DepthDataset:
    """Factory of the built-in scenes (no path)."""
    return DepthScenes(split, generated_split_size("depth_scenes", path, split, n, DEFAULT_N), seed)
