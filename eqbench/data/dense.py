"""Datasets with per-pixel labels: the base class of ``shapes``, ``ade20k``, ``voc`` and ``coco``.

A :class:`SegmentationDataset` is an :class:`~eqbench.data.base.ImageDataset` that also hands
out semantic masks: ``load_pair(indices, size)`` returns the images and their masks at the same
square size (the image resized so its shorter side is ``size`` then centre-cropped; the mask
resized the same way with nearest-neighbour interpolation). Mask values are contiguous class
indices ``0 .. num_classes - 1`` and :data:`IGNORE_INDEX` (255) for pixels that are not scored.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from eqbench.data.base import ImageDataset, kept_subset
from eqbench.errors import DatasetError

#: Mask value of pixels that are not scored (VOC boundaries, ADE20K "other", COCO crowds).
IGNORE_INDEX = 255


@dataclass(frozen=True)
class Instance:
    """One object of an image.

    Attributes:
        category: class index in the dataset's ``classes`` (``>= 1``; 0 is the background).
        mask: ``(H, W)`` bool mask of the visible object at the image's stored resolution.
        box: ``(x, y, w, h)`` in pixels, the tight box around ``mask`` (COCO convention).
    """

    category: int
    mask: np.ndarray
    box: tuple[float, float, float, float]


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight COCO box ``(x, y, w, h)`` of a non-empty bool mask ``(H, W)``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return (float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1))


class SegmentationDataset(ImageDataset):
    """A split whose images come with semantic masks.

    Attributes:
        num_classes: number of scored classes; mask values are ``0 .. num_classes - 1``.
        ignore_index: mask value of unscored pixels (:data:`IGNORE_INDEX`).
    """

    num_classes: int
    ignore_index: int = IGNORE_INDEX

    @abstractmethod
    def load_pair(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Images and masks of ``indices``.

        Returns:
            ``(images (B, 3, size, size) uint8, masks (B, size, size) int64)``.
        """

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        return self.load_pair(indices, size)[0]


def square_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[Tensor, Tensor]:
    """Resize an image and its mask so the shorter side is ``size``, then centre-crop a square.

    Args:
        image: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` integer class map.
        size: output side.

    Returns:
        ``(image (3, size, size) uint8, mask (size, size) int64)``; the image is resized with
        antialiased bilinear interpolation, the mask with exact nearest-neighbour.
    """
    h, w = mask.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and mask {(h, w)} differ in size")
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    msk = torch.from_numpy(mask.astype(np.float32))[None, None]
    if (nh, nw) != (h, w):
        img = F.interpolate(img, size=(nh, nw), mode="bilinear", antialias=True)
        msk = F.interpolate(msk, size=(nh, nw), mode="nearest-exact")
    top, left = (nh - size) // 2, (nw - size) // 2
    img = img[0, :, top : top + size, left : left + size]
    msk = msk[0, 0, top : top + size, left : left + size]
    return img.round().clamp(0, 255).to(torch.uint8), msk.round().to(torch.int64)


def names_digest(names: Sequence[str]) -> str:
    """A short hash of a list of file names (for fingerprints)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8, or raise :class:`DatasetError`."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DatasetError(
            f"Cannot read image file '{path}' ({type(exc).__name__}: {exc}). It is corrupt, "
            "truncated or not an image: replace or delete it."
        ) from exc


def read_label_png(path: Path) -> np.ndarray:
    """Decode a label PNG (greyscale or palette) to its raw ``(H, W)`` values, as int64."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"mode {img.mode} is not a label map (expected L or P)")
            return np.array(img).astype(np.int64)
    except Exception as exc:
        raise DatasetError(
            f"Cannot read label map '{path}' ({type(exc).__name__}: {exc}). Label maps are "
            "single-channel PNGs of class indices: replace or delete it."
        ) from exc


class FilePairs:
    """A split whose items are pairs of files (an image and its per-pixel map), of which a seeded
    subset is kept: the common part of :class:`MaskFiles` and
    :class:`~eqbench.data.depth.DepthFiles`.

    Attributes:
        pairs: the pairs kept.
        total: number of pairs in the whole split.
        paths_hash: :func:`names_digest` of the names of the images of the whole split.
        n: number of pairs kept, or ``None`` when all are.
        seed: seed of the subset.
    """

    name: str
    root: Path
    split: str
    version: int
    labels: np.ndarray
    groups: np.ndarray
    pairs: list[tuple[Path, Path]]
    total: int
    paths_hash: str
    n: int | None
    seed: int

    def _keep_pairs(
        self,
        pairs: list[tuple[Path, Path]],
        image_name: Callable[[Path], str],
        n: int | None,
        seed: int,
    ) -> None:
        """Keep a seeded subset of ``n`` of ``pairs`` (all when ``None``), each with label 0.

        ``image_name`` names an image in ``paths_hash``. Raises :class:`DatasetError` when ``n``
        is negative.
        """
        keep, self.n = kept_subset(len(pairs), n, seed, self.split)
        self.total = len(pairs)
        self.paths_hash = names_digest([image_name(image) for image, _ in pairs])
        self.seed = seed
        self.pairs = [pairs[i] for i in keep]
        self.labels = np.zeros(len(self.pairs), dtype=np.int64)
        self.groups = np.arange(len(self.pairs), dtype=np.int64)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            "files": self.total,
            "paths_sha256": self.paths_hash,
            "n": self.n,
            "seed": self.seed if self.n is not None else None,
            "version": self.version,
        }


class MaskFiles(FilePairs, SegmentationDataset):
    """A split given as pairs of image and label-map files (the ADE20K and VOC layouts).

    Args:
        name: registry name.
        root: dataset root (for the fingerprint).
        split: ``train`` or ``test``.
        pairs: ``(image_path, label_path)`` per image, sorted.
        classes: class names; label values index them.
        reduce_zero_label: map label 0 to ignore and ``v`` to ``v - 1`` (ADE20K, as in mmseg).
        n: keep a seeded subset of this many images.
        seed: seed of the subset.
        version: the loader's version (fingerprint).
    """

    def __init__(
        self,
        name: str,
        root: Path,
        split: str,
        pairs: list[tuple[Path, Path]],
        classes: Sequence[str],
        reduce_zero_label: bool,
        n: int | None,
        seed: int,
        version: int = 1,
    ) -> None:
        self.name = name
        self.root = root
        self.split = split
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.reduce_zero_label = reduce_zero_label
        self.version = version
        self._keep_pairs(pairs, lambda image: image.name, n, seed)

    def read_mask(self, path: Path) -> np.ndarray:
        """The label map of ``path`` in contiguous classes with ``IGNORE_INDEX``."""
        raw = read_label_png(path)
        if self.reduce_zero_label:
            raw = np.where(raw == 0, IGNORE_INDEX, raw - 1)
        return np.where((raw >= 0) & (raw < self.num_classes), raw, IGNORE_INDEX)

    def load_pair(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        images = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        masks = torch.empty((len(indices), size, size), dtype=torch.int64)
        for row, i in enumerate(indices):
            image_path, label_path = self.pairs[int(i)]
            image, mask = read_rgb(image_path), self.read_mask(label_path)
            if image.shape[:2] != mask.shape:
                raise DatasetError(
                    f"Image '{image_path}' is {image.shape[1]}x{image.shape[0]} but its label "
                    f"map '{label_path}' is {mask.shape[1]}x{mask.shape[0]}. Replace the pair."
                )
            images[row], masks[row] = square_pair(image, mask, size)
        return images, masks
