"""``inat2019:PATH``: iNaturalist 2019 in its official layout (the FGVC6 competition release).

Layout::

    PATH/train2019.json        COCO-style: images [{id, file_name, ...}],
    PATH/val2019.json          annotations [{image_id, category_id, ...}], categories [{id, name}]
    PATH/train_val2019/...     the images, at the json's file_name relative to PATH

The train split is ``train2019.json`` (265,213 images), the test split ``val2019.json`` (3,030
images, the split GTSA and the competition's public evaluation report; ``test2019.json`` has no
labels). Classes are the categories of ``train2019.json`` sorted by id (1,010 of them, ids
0-1009), so label ``i`` means the same in both splits; every image must have exactly one
annotation. Images are decoded as ``imagefolder`` does (RGB, shorter side resized, centre
square). ``n``, when given, keeps a seeded random subset of that many images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbench.data.base import DATASETS, ImageDataset, parallel_rows
from eqbench.data.imagefolder import files_digest, read_image
from eqbench.errors import DatasetError

VERSION = 1
SPLIT_FILES = {"train": "train2019.json", "test": "val2019.json"}

_LAYOUT = (
    "Pass --dataset inat2019:PATH with PATH the folder holding train2019.json, val2019.json and "
    "train_val2019/ as the iNaturalist 2019 release unpacks."
)

DESCRIPTIONS = {
    "inat2019": (
        "iNaturalist 2019 at PATH (official layout): PATH/train2019.json and PATH/val2019.json "
        "(COCO-style, test split = val) with images under PATH/train_val2019/; 1,010 classes; "
        "n = seeded subset."
    )
}


@functools.lru_cache(maxsize=4)
def _read_annotations(path: str, stamp: tuple[int, int]) -> dict[str, Any]:
    """The parsed json (cached while its size and modification time stay the same)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(
            f"Cannot read '{path}' ({type(exc).__name__}: {exc}). Restore the file from the "
            "iNaturalist 2019 release."
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"'{path}' is not a COCO-style annotation file (it needs lists 'images', "
            f"'annotations' and 'categories'). {_LAYOUT}"
        )
    return data


def read_annotations(path: Path) -> dict[str, Any]:
    """``path`` parsed, or :class:`DatasetError` naming the layout."""
    if not path.is_file():
        raise DatasetError(f"Missing annotation file '{path}'. {_LAYOUT}")
    st = path.stat()
    return _read_annotations(str(path), (st.st_size, st.st_mtime_ns))


def categories(root: Path) -> list[dict[str, Any]]:
    """The categories of ``train2019.json``, sorted by id."""
    cats = read_annotations(root / SPLIT_FILES["train"])["categories"]
    try:
        return sorted(cats, key=lambda c: int(c["id"]))
    except (KeyError, TypeError, ValueError):
        raise DatasetError(
            f"'{root / SPLIT_FILES['train']}' has a category without an integer 'id'. "
            "Restore the file from the iNaturalist 2019 release."
        ) from None


class INat2019(ImageDataset):
    """One split of iNaturalist 2019 (see the module docstring).

    Args:
        root: the folder holding the json files and ``train_val2019/``.
        split: ``train`` or ``test`` (``val2019.json``).
        n: keep a seeded random subset of this many images; ``None`` keeps all.
        seed: seed of the subset.
    """

    def __init__(self, root: Path, split: str, n: int | None, seed: int) -> None:
        self.name = "inat2019"
        self.split = split
        self.root = root
        self.seed = seed
        cats = categories(root)
        self.classes = [str(c.get("name", c["id"])) for c in cats]
        index = {int(c["id"]): i for i, c in enumerate(cats)}
        self.json_path = root / SPLIT_FILES[split]
        files, labels = self._pairs(read_annotations(self.json_path), index)
        self.total = len(files)
        self.paths_hash = hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
        keep = np.arange(len(files))
        if n is not None and n < len(files):
            rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, int(split == "test")])
            keep = np.sort(rng.choice(len(files), size=n, replace=False))
        else:
            n = None
        self.n = n
        self.files = [files[i] for i in keep]
        self.labels = np.asarray(labels, dtype=np.int64)[keep]
        self.groups = np.arange(len(self.files), dtype=np.int64)
        self._contents_digest: str | None = None

    def _pairs(self, data: dict[str, Any], index: dict[int, int]) -> tuple[list[str], list[int]]:
        """``(file names, labels)`` in the json's image order, checking every annotation."""
        where = self.json_path
        by_image: dict[Any, int] = {}
        for ann in data["annotations"]:
            image_id, cat = ann.get("image_id"), ann.get("category_id")
            if image_id in by_image:
                raise DatasetError(
                    f"'{where}' annotates image {image_id} twice; iNaturalist has one label per "
                    "image. Restore the file from the release."
                )
            if cat not in index:
                raise DatasetError(
                    f"'{where}' labels image {image_id} with category {cat}, which "
                    f"'{SPLIT_FILES['train']}' does not list. Use the json files of one release."
                )
            by_image[image_id] = index[cat]
        files, labels = [], []
        for image in data["images"]:
            image_id, name = image.get("id"), image.get("file_name")
            if image_id not in by_image or not isinstance(name, str):
                raise DatasetError(
                    f"'{where}' lists image {image_id} ({name}) without a label or file name. "
                    "Restore the file from the release."
                )
            files.append(name)
            labels.append(by_image[image_id])
        return files, labels

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        paths = [self.root / self.files[i] for i in indices]

        def fill(rows: range) -> None:
            for row in rows:
                if not paths[row].is_file():
                    raise DatasetError(
                        f"Image '{paths[row]}' listed in '{self.json_path.name}' does not "
                        f"exist. {_LAYOUT}"
                    )
                out[row] = read_image(paths[row], size)

        parallel_rows(fill, len(paths))
        return out

    def contents_digest(self) -> str:
        """:func:`~eqbench.data.imagefolder.files_digest` of the images kept and the json."""
        if self._contents_digest is None:
            self._contents_digest = files_digest(self.root, [self.json_path.name, *self.files])
        return self._contents_digest

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            "json": self.json_path.name,
            "files": self.total,
            "paths_sha256": self.paths_hash,
            "contents_digest": self.contents_digest(),
            "n": self.n,
            "seed": self.seed if self.n is not None else None,
            "version": VERSION,
        }


@DATASETS.register("inat2019")
def inat2019(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``inat2019:PATH``."""
    if not path:
        raise DatasetError(f"The inat2019 dataset needs a path. {_LAYOUT}")
    if split not in SPLIT_FILES:
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    if n is not None and n < 0:
        raise DatasetError(f"Number of images must be >= 0, got {n}.")
    root = Path(os.path.expanduser(path)).resolve()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"Dataset folder '{root}' {what}. {_LAYOUT}")
    return INat2019(root, split, n, seed)
