"""Built-in ``stick_figures``: seeded stick people with exact MPII keypoints and head boxes.

The offline default of ``pose/mpii``: each :data:`CANVAS` × :data:`CANVAS` image holds one figure
over a smooth random background. The skeleton is MPII's 16 joints (pelvis at the root; spine,
neck and head above it; hips, knees, ankles; shoulders, elbows, wrists) with random limb angles
and bends, seen from the front or the back (which swaps the person's left and right on the
image), leaned and turned by up to :data:`MAX_ROTATION` degrees, 55 to 110 pixels tall, placed
anywhere it fits. Bones are drawn as anti-aliased thick segments, each in a colour of its own
(the person's right limbs warm, the left ones cool, the spine grey, brightness jittered), and
the head is a disc between the upper neck and the head top: its bounding square is the head box
(head size = its diagonal × 0.6, as MPII's). One figure in three has a background-textured
occluder over a random limb joint; joints it covers are marked invisible. ``center`` is the
joints' bounding box centre and ``scale`` its longer side / 200, as MPII annotates people.

Image ``i`` of a split is drawn from a numpy ``Generator`` seeded with ``(seed, split, i,
GENERATOR_VERSION)``, so it does not depend on ``n``; train and test use different streams.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np

from eqbench.data.base import DATASETS, generated_sample_rng, generated_split_size
from eqbench.data.pose import NUM_JOINTS, PIXEL_STD, SKELETON, PoseDataset, PoseSample, head_size

#: Bumped whenever figure sampling or rendering changes (expires cached features).
GENERATOR_VERSION = 1
CANVAS = 128
MAX_ROTATION = 30.0
DEFAULT_N = {"train": 400, "test": 100}


#: Hue of each bone of :data:`~eqbench.protocols.pose.metrics.SKELETON` (None: grey spine).
#: The person's right side is warm (0-0.17), the left cool (0.45-0.75).
_BONE_HUES: tuple[float | None, ...] = (
    0.0, 0.06, 0.12, 0.15, 0.03, 0.09, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, None, None, None,
)  # fmt: skip


def skeleton(rng: np.random.Generator) -> np.ndarray:
    """Joints ``(16, 2)`` of a figure one unit tall-ish, pelvis at the origin, y down, facing
    the viewer (the person's right on the image's left)."""
    joints = np.zeros((NUM_JOINTS, 2))

    def limb(start: np.ndarray, angle: float, length: float) -> np.ndarray:
        return start + length * np.array([math.sin(angle), math.cos(angle)])

    spine = rng.uniform(-0.25, 0.25)  # radians from vertical
    joints[7] = limb(joints[6], math.pi + spine, 0.28)  # thorax above the pelvis
    joints[8] = limb(joints[7], math.pi + spine + rng.uniform(-0.2, 0.2), 0.07)
    joints[9] = limb(joints[8], math.pi + spine + rng.uniform(-0.35, 0.35), 0.16)
    across = np.array([math.cos(spine), -math.sin(spine)])  # towards the image's right
    for side, (hip, knee, ankle, sho, elb, wri) in (
        (-1, (2, 1, 0, 12, 11, 10)),
        (1, (3, 4, 5, 13, 14, 15)),
    ):
        joints[hip] = joints[6] + side * 0.08 * across
        thigh = spine + side * rng.uniform(-0.15, 0.6)
        joints[knee] = limb(joints[hip], thigh, 0.24)
        joints[ankle] = limb(joints[knee], thigh - side * rng.uniform(-0.1, 1.2), 0.23)
        joints[sho] = joints[7] + side * 0.12 * across + 0.02 * np.array([0.0, 1.0])
        upper = spine + side * rng.uniform(-0.3, 2.6)
        joints[elb] = limb(joints[sho], upper, 0.16)
        joints[wri] = limb(joints[elb], upper + side * rng.uniform(-2.4, 0.4), 0.15)
    return joints


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colours ``(size, size, 3)`` in [0, 1]: a 4 × 4 grid of muted colours
    interpolated bilinearly, with mild pixel noise."""
    grid = rng.uniform(0.15, 0.85, size=(4, 4, 1)) * rng.uniform(0.7, 1.0, size=(4, 4, 3))
    t = np.linspace(0, 3, size)
    i0 = np.minimum(t.astype(int), 2)
    f = (t - i0)[:, None]
    rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]  # (size, 4, 3)
    out = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    return np.clip(out + rng.normal(0.0, 0.03, size=out.shape), 0.0, 1.0)


def paint_segment(
    canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float, colour: np.ndarray
) -> None:
    """Draw segment ``a``-``b`` (pixel coordinates, 0-based centres) ``width`` pixels thick
    with anti-aliased edges into ``canvas`` ``(H, W, 3)``, in place."""
    size = canvas.shape[0]
    half = width / 2 + 1
    lo = np.floor(np.minimum(a, b) - half).astype(int).clip(0, size)
    hi = np.ceil(np.maximum(a, b) + half).astype(int).clip(0, size)
    if (hi <= lo).any():
        return
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float64)
    d = b - a
    t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    dist = np.hypot(xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1]))
    alpha = np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)[..., None]
    region = canvas[lo[1] : hi[1], lo[0] : hi[0]]
    region[...] = region * (1 - alpha) + colour * alpha


def render_figure(rng: np.random.Generator, size: int = CANVAS) -> PoseSample:
    """One seeded figure (see the module docstring)."""
    joints = skeleton(rng)
    if rng.random() < 0.5:  # seen from the back: the person's right is on the image's right
        joints[:, 0] = -joints[:, 0]
    angle = math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    joints = joints @ rot.T
    lo, hi = joints.min(axis=0), joints.max(axis=0)
    zoom = rng.uniform(55, 110) / max(float((hi - lo).max()), 1e-6)
    joints = (joints - (lo + hi) / 2) * zoom
    extent = (hi - lo) * zoom / 2 + 4
    centre = rng.uniform(extent, size - 1 - extent)
    joints = joints + centre
    canvas = background(rng, size)
    width = max(2.0, 0.035 * zoom)
    brightness = rng.uniform(0.75, 1.0)
    for (j, k), hue in zip(SKELETON, _BONE_HUES, strict=True):
        colour = colorsys.hsv_to_rgb(hue, 0.85, brightness) if hue is not None else (0.9,) * 3
        paint_segment(canvas, joints[j], joints[k], width, np.array(colour) * rng.uniform(0.9, 1))
    head_centre = (joints[8] + joints[9]) / 2
    head_length = float(np.linalg.norm(joints[9] - joints[8]))  # the disc's diameter
    paint_segment(canvas, head_centre, head_centre, head_length, np.array([0.95, 0.85, 0.7]))
    visible = np.ones(NUM_JOINTS, dtype=bool)
    if rng.random() < 1 / 3:  # an occluder over one limb joint
        target = joints[int(rng.choice([0, 1, 4, 5, 10, 11, 14, 15]))]
        half = rng.uniform(4, 9)
        box = np.concatenate([target - half + rng.uniform(-3, 3, 2), target + half])
        x0, y0 = np.floor(box[:2]).astype(int).clip(0, size)
        x1, y1 = np.ceil(box[2:]).astype(int).clip(0, size)
        canvas[y0:y1, x0:x1] = background(rng, size)[y0:y1, x0:x1]
        covered = (joints >= [x0 - 0.5, y0 - 0.5]) & (joints <= [x1 - 0.5, y1 - 0.5])
        visible &= ~covered.all(axis=1)
    lo, hi = joints.min(axis=0), joints.max(axis=0)
    image = (np.clip(canvas, 0.0, 1.0) * 255).round().astype(np.uint8)
    return PoseSample(
        image=image,
        joints=joints.astype(np.float32),
        visible=visible,
        center=((lo + hi) / 2).astype(np.float32),
        scale=float((hi - lo).max()) / PIXEL_STD,
        head_size=head_size([*(head_centre - head_length / 2), *(head_centre + head_length / 2)]),
    )


class StickFigures(PoseDataset):
    """A split of the built-in figures (see the module docstring)."""

    def __init__(self, split: str, n: int, seed: int) -> None:
        self.name, self.split, self.seed, self.n = "stick_figures", split, seed, n
        self.labels = np.zeros(n, dtype=np.int64)
        self.groups = np.arange(n, dtype=np.int64)
        self.classes = ["person"]

    def sample(self, index: int) -> PoseSample:
        rng = generated_sample_rng(self.seed, self.split, index, GENERATOR_VERSION)
        return render_figure(rng)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "n": self.n,
            "seed": self.seed,
            "size": CANVAS,
            "version": GENERATOR_VERSION,
        }


@DATASETS.register(
    "stick_figures",
    description=(
        f"Built-in, no PATH: seeded {CANVAS}x{CANVAS} stick figures with MPII's 16 joints "
        "(exact), visibility, center/scale and head box; n = number of images (default "
        f"{DEFAULT_N['train']} train / {DEFAULT_N['test']} test)."
    ),
)
def stick_figures(path: str | None, split: str, n: int | None, seed: int) -> PoseDataset:
    """Factory of the built-in figures (no path)."""
    return StickFigures(
        split, generated_split_size("stick_figures", path, split, n, DEFAULT_N), seed
    )
