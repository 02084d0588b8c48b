"""Built-in ``digits``: scikit-learn's 1797 handwritten 8×8 digits, upscaled to RGB images.

Pixel values 0..16 are mapped to 0..255, replicated to three channels and resized to the
requested size (bilinear, antialiased). The split is scikit-learn's ``train_test_split`` with
``test_size=0.3``, ``random_state=0``, stratified by digit (1257 train / 540 test images), with
each split kept in the original order. ``groups`` is the image's index among the 1797, so the
splits share no group. ``n`` and ``seed`` are ignored: the dataset is fixed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbench.data.base import DATASETS, ImageDataset, refuse_path, resize_square
from eqbench.errors import DatasetError

logger = logging.getLogger(__name__)

TEST_SIZE = 0.3
RANDOM_STATE = 0
VERSION = 1


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 (N, 8, 8), labels, train indices, test indices)``, read once."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    images = np.clip(images, 0, 255).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_SIZE,
        random_state=RANDOM_STATE,
        stratify=labels,
    )
    return images, labels, np.sort(train), np.sort(test)


class Digits(ImageDataset):
    """One split of scikit-learn's digits (see the module docstring).

    Args:
        split: ``train`` or ``test``.
    """

    def __init__(self, split: str) -> None:
        images, labels, train, test = _digits()
        rows = train if split == "train" else test
        self.name = "digits"
        self.split = split
        self.classes = [str(d) for d in range(10)]
        self.labels = labels[rows]
        self.groups = rows.astype(np.int64)
        self._images = torch.from_numpy(images[rows])  # (N, 8, 8) uint8

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        grey = self._images[index][:, None]  # (B, 1, 8, 8)
        return resize_square(grey.expand(-1, 3, -1, -1).contiguous(), size)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "n": len(self),
            "test_size": TEST_SIZE,
            "random_state": RANDOM_STATE,
            "version": VERSION,
        }


@DATASETS.register(
    "digits",
    description=(
        "Built-in, no PATH: scikit-learn's 1797 handwritten 8×8 digits (10 classes) upscaled to "
        "RGB; stratified 70/30 train/test split (random_state 0); n and seed are ignored."
    ),
)
def digits(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of the built-in ``digits`` dataset (``path`` must be ``None``; n, seed ignored)."""
    refuse_path("digits", path)
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    if n is not None:
        logger.debug("digits is a fixed dataset; ignoring n=%s", n)
    return Digits(split)
