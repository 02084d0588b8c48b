"""Built-in ``photos``: seeded random square crops of natural photographs that ship with packages.

The sources are the sample photographs bundled inside installed packages, so the dataset needs no
download: scikit-learn's ``china`` and ``flower``, scikit-image's ``skimage.data`` photographs
(greyscale ones replicated to RGB; ``stereo_motorcycle`` contributes its left image) and
matplotlib's ``grace_hopper``. A photo that fails to load is skipped with a warning.

Split: a fixed list of photos (:data:`TEST_PHOTOS`, about a quarter, chosen for varied content) is
the test split, all others the train split, so the splits share no source photo. Labels and
groups are both the photo's index in :data:`PHOTO_NAMES`; ``classes`` is :data:`PHOTO_NAMES`.

Crops: crop ``i`` of a split is drawn, in order, from a numpy ``Generator`` seeded with
``(seed, split, GENERATOR_VERSION)``: the photo uniformly among the split's photos, the side
``⌊u·min(H, W)⌋`` with ``u ~ U[0.3, 0.8]`` (:data:`CROP_SCALE`), then the top-left corner uniformly
over positions inside the photo. Crop ``i`` therefore depends on ``(seed, split, i)`` only, not on
``n``. :meth:`PhotoCrops.load` resizes the crop box to the requested size (antialiased bilinear),
so every index shows the same content at any size.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbench.data.base import (
    DATASETS,
    ImageDataset,
    parallel_rows,
    refuse_path,
    resize_box,
    split_size,
)
from eqbench.errors import DatasetError

logger = logging.getLogger(__name__)

#: Bumped whenever the crop sampling changes, so cached features keyed on the fingerprint expire.
GENERATOR_VERSION = 1
#: Range of the crop side as a fraction of the photo's shorter side.
CROP_SCALE = (0.3, 0.8)
#: Number of crops when ``n`` is not given.
DEFAULT_N = {"train": 2000, "test": 500}

_SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
    "camera",
    "moon",
    "brick",
    "grass",
    "gravel",
    "coins",
    "clock",
    "page",
    "text",
    "cell",
)
#: Every source photo, in label order.
PHOTO_NAMES: tuple[str, ...] = ("china", "flower", *_SKIMAGE_PHOTOS, "grace_hopper")
#: The test photos: colour flowers, an animal, a portrait, grey objects and a grey texture.
TEST_PHOTOS: tuple[str, ...] = ("flower", "chelsea", "grace_hopper", "coins", "gravel")


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``(H, W, 3)`` uint8 array."""
    if image.dtype != np.uint8:
        from skimage.util import img_as_ubyte

        image = img_as_ubyte(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"unexpected photo shape {image.shape}")
    return np.ascontiguousarray(image)


def _read_sklearn(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image(f"{name}.jpg"))


def _read_skimage(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    return np.asarray(image)


def _read_matplotlib(name: str) -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    path = Path(cbook.get_sample_data(f"{name}.jpg", asfileobj=False))
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _reader(name: str) -> Callable[[str], np.ndarray]:
    if name in ("china", "flower"):
        return _read_sklearn
    if name == "grace_hopper":
        return _read_matplotlib
    return _read_skimage


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """Decode source photo ``name`` as a read-only ``(H, W, 3)`` uint8 array (cached).

    Raises:
        Exception: whatever the package's loader raises when the photo is unavailable.
    """
    image = _to_rgb_uint8(_reader(name)(name))
    image.setflags(write=False)
    return image


@functools.cache
def available_photos() -> tuple[str, ...]:
    """Names of the source photos that load offline here, in :data:`PHOTO_NAMES` order."""
    names = []
    for name in PHOTO_NAMES:
        try:
            load_photo(name)
        except Exception as exc:  # a missing optional file or package must not break the rest
            logger.warning("Skipping built-in photo '%s': %s: %s", name, type(exc).__name__, exc)
            continue
        names.append(name)
    return tuple(names)


def split_photos(split: str, n: int, dataset: str) -> list[str]:
    """The built-in photos of ``split`` that load here, in :data:`PHOTO_NAMES` order: those of
    :data:`TEST_PHOTOS` for ``test``, the others for ``train``.

    Args:
        split: ``train`` or ``test``.
        n: number of items of ``dataset`` asked for; none needs no photo.
        dataset: the built-in dataset drawing from the photos, for the message.

    Raises:
        DatasetError: no photo of the split loads and ``n > 0``.
    """
    names = [name for name in available_photos() if (name in TEST_PHOTOS) == (split == "test")]
    if not names and n > 0:
        raise DatasetError(
            f"None of the built-in {split} photos ({', '.join(TEST_PHOTOS)} for test, the "
            f"others for train) could be loaded, so '{dataset}' has no photos to draw from; see "
            "the warnings above. Reinstall scikit-image, scikit-learn and matplotlib, or use "
            "another dataset."
        )
    return names


def _split_code(split: str) -> int:
    return {"train": 0, "test": 1}[split]


def photos_fingerprint(
    name: str, split: str, n: int, seed: int, photos: Sequence[str], version: int, **extra: Any
) -> dict[str, Any]:
    """The fingerprint of a split of the built-in dataset ``name`` generated from the built-in
    ``photos``: name, split, size ``n``, seed, photos, then the generator's ``extra`` settings
    and its ``version``."""
    return {
        "name": name,
        "split": split,
        "n": n,
        "seed": seed,
        "photos": list(photos),
        **extra,
        "version": version,
    }


class PhotoCrops(ImageDataset):
    """Seeded random square crops of the built-in photographs (see the module docstring).

    Args:
        split: ``train`` or ``test``.
        n: number of crops.
        seed: seed of the crop sampler.
    """

    def __init__(self, split: str, n: int, seed: int) -> None:
        self.name = "photos"
        self.split = split
        self.n = n
        self.seed = seed
        self.classes = list(PHOTO_NAMES)
        self.photos = split_photos(split, n, "photos")
        self.labels, self.boxes = self._sample_boxes()
        self.groups = self.labels.copy()

    def _sample_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``(labels, boxes)``; ``boxes[i] = (top, left, side)`` in source pixels."""
        seed_words = [self.seed & 0xFFFFFFFFFFFFFFFF, _split_code(self.split), GENERATOR_VERSION]
        rng = np.random.default_rng(np.random.SeedSequence(seed_words))
        index = {name: i for i, name in enumerate(PHOTO_NAMES)}
        labels = np.empty(self.n, dtype=np.int64)
        boxes = np.empty((self.n, 3), dtype=np.int64)
        lo, hi = CROP_SCALE
        for i in range(self.n):
            name = self.photos[int(rng.integers(len(self.photos)))]
            height, width = load_photo(name).shape[:2]
            side = max(1, int(rng.uniform(lo, hi) * min(height, width)))
            top = int(rng.integers(height - side + 1))
            left = int(rng.integers(width - side + 1))
            labels[i] = index[name]
            boxes[i] = (top, left, side)
        return labels, boxes

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        """Crops ``indices`` resized to ``size`` (uint8, channels-last memory).

        Each crop box is resized on its own (antialiased, uint8) straight into its row of a
        ``(B, size, size, 3)`` buffer, the layout the resizing kernel produces, so no copy
        follows; rows are split over :func:`~eqbench.data.base.parallel_rows` threads.
        Every row is computed on its own, so neither the order nor the threads change a value.
        """
        return self._resized(indices, size, size)

    def load_window(self, indices: Sequence[int], size: int, window: int) -> Tensor:
        """The centre ``window`` of :meth:`load` ``(indices, size)``, from the pixels it needs.

        Each row is the head of the ``size`` resize up to the window's far edge
        (:func:`~eqbench.data.base.resize_box`): for the synthetic identity view (the
        centre 64 of a 128 context) about half the source pixels and half the output.
        """
        lo = (size - window) // 2
        return self._resized(indices, size, lo + window)[..., lo:, lo:]

    def _resized(self, indices: Sequence[int], size: int, stop: int) -> Tensor:
        """The first ``stop`` rows and columns of crops ``indices`` resized to ``size``."""
        out = torch.empty((len(indices), stop, stop, 3), dtype=torch.uint8)
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        rows = np.column_stack([self.boxes[index], self.labels[index]]).tolist()
        # photo by photo (then top to bottom): the crops of one photo overlap, so their pixels
        # are still in the CPU cache for the next crop (about 10 % faster than index order)
        order = sorted(range(len(rows)), key=lambda r: (rows[r][3], rows[r][0]))
        photos = {label: load_photo(PHOTO_NAMES[label]) for label in {r[3] for r in rows}}
        rows_out = out.permute(0, 3, 1, 2)

        def fill(span: range) -> None:
            for row in (order[k] for k in span):
                top, left, side, label = rows[row]
                resize_box(photos[label], top, left, side, size, rows_out[row : row + 1])

        parallel_rows(fill, len(rows))
        return rows_out

    def fingerprint(self) -> dict[str, Any]:
        return photos_fingerprint(
            self.name,
            self.split,
            self.n,
            self.seed,
            self.photos,
            GENERATOR_VERSION,
            crop_scale=list(CROP_SCALE),
        )


@DATASETS.register(
    "photos",
    description=(
        f"Built-in, no PATH: seeded random square crops of {len(PHOTO_NAMES)} photographs "
        "bundled with scikit-learn, scikit-image and matplotlib; test uses photos "
        f"{', '.join(TEST_PHOTOS)}, train the rest; n = number of crops "
        f"(default {DEFAULT_N['train']} train / {DEFAULT_N['test']} test)."
    ),
)
def photos(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of the built-in ``photos`` dataset (``path`` must be ``None``)."""
    refuse_path("photos", path)
    return PhotoCrops(split, split_size(split, n, DEFAULT_N, "photo crops"), seed)
