"""Single-person keypoints: the base class of ``stick_figures`` and ``mpii``, and the person crop.

A :class:`PoseDataset` is an :class:`~eqbench.data.base.ImageDataset` whose items are people:
:meth:`PoseDataset.sample` returns a :class:`PoseSample` (the whole image, the 16 MPII joints in
0-based pixel coordinates with their visibility, the person's ``center`` and ``scale`` and the
head size PCKh divides by). :func:`crop_person` cuts the square box the top-down pose task reads:
side ``scale × 200 × 1.25`` around ``center`` (mmpose's ``GetBBoxCenterScale`` padding 1.25 and
``TopdownAffine``: the centre maps to the crop's centre), resized to the task's input size.

``mpii:PATH`` reads the layout mmpose uses (``MpiiDataset``, ``mmpose/datasets/datasets/body/
mpii_dataset.py``; ViTPose's MPII configs: ``annotations/mpii_train.json``,
``annotations/mpii_val.json``, ``img_prefix=images/``)::

    annotations/mpii_train.json, annotations/mpii_val.json
        a JSON list, one dict per person: "image" (file name under images/), "joints" (16 × 2,
        MPII's 1-based pixels), "joints_vis" (16 × 0/1), "center" (2, 1-based pixels),
        "scale" (person height / 200); optional "headbox" [x1, y1, x2, y2]
    annotations/mpii_gt_val.mat    MPII's head boxes of the val split (headboxes_src), as
                                   mmpose's download ships it; needed for PCKh unless every
                                   val entry has a "headbox"
    images/<image>

As mmpose (``MpiiDataset._load_annotations``, lines 165-213) the center moves down by 15 × scale
pixels ("to avoid cropping limbs"), centers and joints become 0-based, and the head size is the
head box's diagonal × 0.6. ``train`` reads ``mpii_train.json``, ``test`` reads
``mpii_val.json`` (MPII's test labels are not public; the val split is what papers report).
Every listed image is checked to exist when the dataset is opened; ``n`` keeps a seeded subset.
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from eqbench.data.base import DATASETS, ImageDataset, check_root, kept_subset
from eqbench.data.dense import names_digest, read_rgb
from eqbench.errors import DatasetError

#: MPII's scale unit: ``scale`` is the person's height in units of 200 pixels.
PIXEL_STD = 200.0
#: Context around the person box (mmpose ``GetBBoxCenterScale`` default).
PADDING = 1.25

#: MPII's 16 joints in annotation order (mmpose ``MpiiDataset``, lines 23-40).
JOINTS = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)
NUM_JOINTS = len(JOINTS)
#: Bones between joints (mmpose ``configs/_base_/datasets/mpii.py`` skeleton).
SKELETON = (
    (0, 1), (1, 2), (2, 6), (7, 12), (12, 11), (11, 10), (5, 4), (4, 3), (3, 6), (7, 13),
    (13, 14), (14, 15), (6, 7), (7, 8), (8, 9),
)  # fmt: skip
#: Head size = head box diagonal × SC_BIAS (MPII's official evaluation).
SC_BIAS = 0.6

MPII_FILES = {"train": "mpii_train.json", "test": "mpii_val.json"}
MPII_HEADBOXES = "mpii_gt_val.mat"

_MPII_LAYOUT = (
    "Pass --dataset mpii:PATH with PATH holding annotations/mpii_train.json and "
    "annotations/mpii_val.json (mmpose's MPII annotations: a list of dicts with image, joints, "
    "joints_vis, center, scale), annotations/mpii_gt_val.mat (the val head boxes) and images/."
)


@dataclass(frozen=True)
class PoseSample:
    """One person.

    Attributes:
        image: ``(H, W, 3)`` uint8, the whole image.
        joints: ``(16, 2)`` float32 x, y in 0-based pixels, MPII's joint order.
        visible: ``(16,)`` bool, annotated and visible (only these are trained on and scored).
        center: ``(2,)`` float32 centre of the person box in pixels.
        scale: person height / 200 (the box side before :data:`PADDING`).
        head_size: head box diagonal × 0.6 in pixels (NaN where unknown: training splits).
    """

    image: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: float
    head_size: float


class PoseDataset(ImageDataset):
    """A split of single-person keypoint annotations."""

    @abstractmethod
    def sample(self, index: int) -> PoseSample:
        """The person ``index`` with its image."""

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        """Person crops by index at ``size × size`` (the image interface)."""
        out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        for row, i in enumerate(indices):
            crop = crop_person(self.sample(int(i)), size)
            out[row] = torch.from_numpy(crop.image).permute(2, 0, 1)
        return out


@dataclass(frozen=True)
class Crop:
    """A person crop and the map between its pixels and the image's: ``crop = (image - center)
    × zoom + size / 2`` (0-based pixel coordinates, both ways)."""

    image: np.ndarray  # (size, size, 3) uint8
    center: np.ndarray  # (2,)
    zoom: float
    size: int

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image pixels ``(..., 2)`` to crop pixels."""
        return (points - self.center) * self.zoom + self.size / 2

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels ``(..., 2)`` to image pixels."""
        return (points - self.size / 2) / self.zoom + self.center


def crop_person(sample: PoseSample, size: int) -> Crop:
    """The square box of side ``scale × 200 × 1.25`` around ``center``, resized to ``size``
    (bilinear; pixels outside the image are black, as ``cv2.warpAffine``'s border).

    The affine map is mmpose's ``TopdownAffine`` without rotation; a box more than twice the
    crop is first shrunk by the integer factor with PIL's box filter, which averages the
    pixels plain bilinear sampling (mmpose's) would skip.
    """
    side = sample.scale * PIXEL_STD * PADDING
    if not (side > 0 and math.isfinite(side)):
        raise DatasetError(f"Person box has scale {sample.scale}; the scale must be positive.")
    zoom = size / side
    image = Image.fromarray(sample.image)
    factor = max(1, int(side / size / 2))
    if factor > 1:
        image = image.reduce(factor)  # output pixel i covers input pixels [i·f, (i+1)·f)
    # PIL samples output pixel centre x+0.5 at input a·(x+0.5)+c in continuous coordinates,
    # where 0-based pixel i spans [i, i+1); with 0-based coordinates p = continuous - 0.5:
    # input = (output - size/2) / zoom + center (mapped into the reduced image).
    a = 1.0 / (zoom * factor)  # one crop pixel in (reduced) image pixels
    cx = (float(sample.center[0]) + 0.5) / factor
    cy = (float(sample.center[1]) + 0.5) / factor
    offset = (0.5 + size / 2) * a
    data = (a, 0.0, cx - offset, 0.0, a, cy - offset)
    crop = image.transform((size, size), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    return Crop(np.asarray(crop, dtype=np.uint8), np.asarray(sample.center, np.float64), zoom, size)


def head_size(box: np.ndarray | list[float]) -> float:
    """MPII's normaliser: the diagonal of the head box ``(x1, y1, x2, y2)`` × :data:`SC_BIAS`."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return math.hypot(x2 - x1, y2 - y1) * SC_BIAS


def _check_split(split: str) -> None:
    if split not in MPII_FILES:
        raise DatasetError(f"Unknown split '{split}'; use train or test.")


def _field(entry: Any, key: str, number: int, listing: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Entry ``number``'s ``key`` as a float64 array of ``shape``, or a DatasetError."""
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(
            f"Entry {number} of '{listing}' has no '{key}'. Each entry is a dict with image, "
            f"joints, joints_vis, center and scale. {_MPII_LAYOUT}"
        )
    try:
        value = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError):
        value = np.empty(0)
    if value.shape != shape or not np.isfinite(value).all():
        raise DatasetError(
            f"Entry {number} of '{listing}': '{key}' must be {' x '.join(map(str, shape)) or 'a'} "
            f"finite number{'s' if shape else ''}, got {str(entry[key])[:60]}. Fix the entry."
        )
    return value


@dataclass(frozen=True)
class MpiiEntry:
    """One parsed annotation (0-based pixels, center already moved down)."""

    image: Path
    joints: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: float
    head_size: float


def read_headboxes(path: Path) -> np.ndarray:
    """MPII's ``headboxes_src`` ``(2, 2, N)`` as head sizes ``(N,)`` (diagonal × 0.6)."""
    from scipy.io import loadmat

    try:
        boxes = np.asarray(loadmat(str(path))["headboxes_src"], dtype=np.float64)
    except Exception as exc:  # scipy raises ValueError, KeyError, MatReadError, ...
        raise DatasetError(
            f"Cannot read head boxes from '{path}' ({type(exc).__name__}: {exc}). It must be "
            "MPII's mpii_gt_val.mat with 'headboxes_src' (2 x 2 x N)."
        ) from exc
    if boxes.ndim != 3 or boxes.shape[:2] != (2, 2):
        raise DatasetError(f"'headboxes_src' in '{path}' is {boxes.shape}, expected (2, 2, N).")
    return np.linalg.norm(boxes[1] - boxes[0], axis=0) * SC_BIAS


def read_mpii(root: Path, split: str) -> list[MpiiEntry]:
    """Parse and check ``split`` of ``mpii:PATH`` (see the module docstring)."""
    listing = root / "annotations" / MPII_FILES[split]
    if not listing.is_file():
        raise DatasetError(f"Missing annotation file '{listing}'. {_MPII_LAYOUT}")
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"Cannot read '{listing}' as JSON ({exc}). {_MPII_LAYOUT}") from exc
    if not isinstance(entries, list):
        raise DatasetError(f"'{listing}' must hold a JSON list of people. {_MPII_LAYOUT}")
    if not entries:
        raise DatasetError(f"'{listing}' lists no person: the split is empty. {_MPII_LAYOUT}")
    sizes = np.full(len(entries), math.nan)
    matfile = listing.parent / MPII_HEADBOXES
    if split == "test" and matfile.is_file():
        sizes = read_headboxes(matfile)
        if len(sizes) != len(entries):
            raise DatasetError(
                f"'{matfile}' has {len(sizes)} head boxes but '{listing}' lists {len(entries)} "
                "people; they must be MPII's val split in the same order."
            )
    out = []
    for number, entry in enumerate(entries):
        name = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise DatasetError(f"Entry {number} of '{listing}' has no image name. {_MPII_LAYOUT}")
        joints = _field(entry, "joints", number, listing, (NUM_JOINTS, 2))
        visible = _field(entry, "joints_vis", number, listing, (NUM_JOINTS,)) > 0
        center = _field(entry, "center", number, listing, (2,))
        scale = float(_field(entry, "scale", number, listing, ()))
        if scale <= 0:
            raise DatasetError(f"Entry {number} of '{listing}' has scale {scale}; must be > 0.")
        if "headbox" in entry:
            sizes[number] = head_size(_field(entry, "headbox", number, listing, (4,)))
        if center[0] != -1:  # mmpose: move the center down so limbs are not cut
            center[1] += 15 * scale
        image = root / "images" / name
        if not image.is_file():
            raise DatasetError(
                f"'{listing.name}' entry {number} names '{image}', which does not exist. "
                "Restore the image or remove the entry."
            )
        out.append(
            MpiiEntry(
                image,
                (joints - 1).astype(np.float32),
                visible,
                (center - 1).astype(np.float32),
                scale,
                float(sizes[number]),
            )
        )
    if split == "test" and not all(e.head_size > 0 for e in out):
        missing = next(i for i, e in enumerate(out) if not e.head_size > 0)
        raise DatasetError(
            f"PCKh needs each test person's head box, and entry {missing} of '{listing}' has "
            f"none (nor a positive one). Put MPII's {MPII_HEADBOXES} beside it, or give each "
            "entry a 'headbox': [x1, y1, x2, y2]."
        )
    return out


class MpiiFiles(PoseDataset):
    """A split of ``mpii:PATH``.

    Args:
        root: dataset root.
        split: ``train`` or ``test`` (= MPII val).
        entries: the parsed annotations, in file order.
        n / seed: keep a seeded subset of ``n`` people.
    """

    version = 1

    def __init__(
        self, root: Path, split: str, entries: list[MpiiEntry], n: int | None, seed: int
    ) -> None:
        keep, self.n = kept_subset(len(entries), n, seed, split, "people")
        self.name, self.root, self.split, self.seed = "mpii", root, split, seed
        self.total = len(entries)
        self.paths_hash = names_digest([str(e.image.relative_to(root)) for e in entries])
        self.entries = [entries[i] for i in keep]
        self.labels = np.zeros(len(self.entries), dtype=np.int64)
        self.groups = np.arange(len(self.entries), dtype=np.int64)
        self.classes = ["person"]

    def sample(self, index: int) -> PoseSample:
        e = self.entries[index]
        return PoseSample(read_rgb(e.image), e.joints, e.visible, e.center, e.scale, e.head_size)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            "people": self.total,
            "paths_sha256": self.paths_hash,
            "n": self.n,
            "seed": self.seed if self.n is not None else None,
            "version": self.version,
        }


@DATASETS.register(
    "mpii",
    description=(
        "MPII Human Pose in mmpose's layout at PATH: annotations/mpii_{train,val}.json (image, "
        "joints, joints_vis, center, scale), annotations/mpii_gt_val.mat (val head boxes), "
        "images/; test = val; n = seeded subset."
    ),
)
def mpii(path: str | None, split: str, n: int | None, seed: int) -> PoseDataset:
    """Factory of ``mpii:PATH`` (mmpose's MPII layout, see the module docstring)."""
    _check_split(split)
    root = check_root(path, "mpii", _MPII_LAYOUT)
    return MpiiFiles(root, split, read_mpii(root, split), n, seed)
