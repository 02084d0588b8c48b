"""``coco:PATH``: COCO instance annotations (boxes, masks) and the semantic maps made from them.

Layout (as distributed, e.g. COCO 2017)::

    annotations/instances_train2017.json   images in train2017/   (train split)
    annotations/instances_val2017.json     images in val2017/     (test split)

Any ``annotations/instances_<name>.json`` whose ``<name>`` starts with ``train`` (``val`` for
the test split) is used, with its images in ``PATH/<name>/``. Segmentations may be polygons,
uncompressed or compressed RLE (decoded with pycocotools). Categories are sorted by id and
numbered 1..K; the semantic map paints the objects largest first (small ones stay visible),
0 = no object, crowd regions (``iscrowd: 1``) = 255 (ignored).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbench.data.base import DATASETS, check_root, kept_subset, resize_square
from eqbench.data.dense import (
    IGNORE_INDEX,
    Instance,
    SegmentationDataset,
    names_digest,
    read_rgb,
    square_pair,
)
from eqbench.errors import DatasetError

VERSION = 1
SPLITS = {"train": "train", "test": "val"}
_LAYOUT = (
    "Pass --dataset coco:PATH with PATH holding annotations/instances_train2017.json and "
    "annotations/instances_val2017.json, and the images in train2017/ and val2017/."
)


def annotation_file(root: Path, split: str) -> Path:
    """The split's ``annotations/instances_<name>.json``; exactly one must match."""
    prefix = SPLITS[split]
    folder = root / "annotations"
    found = sorted(folder.glob(f"instances_{prefix}*.json")) if folder.is_dir() else []
    if not found:
        raise DatasetError(f"No '{folder}/instances_{prefix}*.json' found. {_LAYOUT}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(
            f"Several annotation files match the {split} split ({names}). Keep one, or point "
            "PATH at a folder holding only the release you want."
        )
    return found[0]


def read_annotations(path: Path) -> dict[str, Any]:
    """Parse and check a COCO instances JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"Annotation file '{path}' is not valid JSON ({exc}). It is truncated or corrupt: "
            "download or export it again."
        ) from None
    missing = [
        k
        for k in ("images", "annotations", "categories")
        if not isinstance(data, dict) or k not in data
    ]
    if missing:
        raise DatasetError(
            f"Annotation file '{path}' lacks {', '.join(missing)}; it is not a COCO instances "
            "file. Use annotations/instances_*.json."
        )
    return data


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, RLE or compressed RLE) as an ``(H, W)`` bool mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return np.asarray(mask_utils.decode(rle), dtype=bool)


class CocoInstances(SegmentationDataset):
    """One split of a COCO-layout dataset (see the module docstring)."""

    def __init__(self, root: Path, split: str, n: int | None, seed: int) -> None:
        self.name = "coco"
        self.root = root
        self.split = split
        self.seed = seed
        self.ann_path = annotation_file(root, split)
        self.image_dir = root / self.ann_path.stem.removeprefix("instances_")
        if not self.image_dir.is_dir():
            raise DatasetError(
                f"Image folder '{self.image_dir}' (named after '{self.ann_path.name}') is "
                f"missing. {_LAYOUT}"
            )
        data = read_annotations(self.ann_path)
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.category_index = {int(c["id"]): i + 1 for i, c in enumerate(categories)}
        self.classes = ["background", *(str(c["name"]) for c in categories)]
        self.num_classes = len(self.classes)
        images = sorted(data["images"], key=lambda im: int(im["id"]))
        if not images:
            raise DatasetError(
                f"'{self.ann_path}' lists no images: the {split} split is empty. {_LAYOUT}"
            )
        by_image: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in images}
        for ann in data["annotations"]:
            if int(ann["image_id"]) in by_image:
                by_image[int(ann["image_id"])].append(ann)
        self.total = len(images)
        self.paths_hash = names_digest([str(im["file_name"]) for im in images])
        keep, self.n = kept_subset(len(images), n, seed, split)
        self.images = [images[i] for i in keep]
        self.annotations = [by_image[int(im["id"])] for im in self.images]
        self.labels = np.zeros(len(self.images), dtype=np.int64)
        self.groups = np.arange(len(self.images), dtype=np.int64)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` at its stored resolution, ``(H, W, 3)`` uint8."""
        path = self.image_dir / str(self.images[i]["file_name"])
        if not path.is_file():
            raise DatasetError(
                f"'{self.ann_path.name}' lists '{path.name}' but '{path}' is missing. Restore it."
            )
        return read_rgb(path)

    def instances(self, i: int) -> list[Instance]:
        """The non-crowd objects of image ``i`` at its stored resolution."""
        info = self.images[i]
        h, w = int(info["height"]), int(info["width"])
        return [
            Instance(
                self.category_index[int(a["category_id"])],
                decode_segmentation(a["segmentation"], h, w),
                tuple(float(v) for v in a["bbox"]),  # type: ignore[arg-type]
            )
            for a in self.annotations[i]
            if not a.get("iscrowd", 0)
        ]

    def semantic(self, i: int) -> np.ndarray:
        """Class map of image ``i`` (largest objects painted first, crowds ignored)."""
        info = self.images[i]
        h, w = int(info["height"]), int(info["width"])
        out = np.zeros((h, w), dtype=np.int64)
        anns = sorted(self.annotations[i], key=lambda a: -float(a.get("area", 0.0)))
        for a in anns:
            mask = decode_segmentation(a["segmentation"], h, w)
            out[mask] = (
                IGNORE_INDEX if a.get("iscrowd", 0) else self.category_index[int(a["category_id"])]
            )
        return out

    def load_pair(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        images = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        masks = torch.empty((len(indices), size, size), dtype=torch.int64)
        for row, i in enumerate(indices):
            image, mask = self.image(int(i)), self.semantic(int(i))
            if image.shape[:2] != mask.shape:
                raise DatasetError(
                    f"Image '{self.images[int(i)]['file_name']}' is not the size its annotation "
                    "says (width/height). Fix the annotation file."
                )
            images[row], masks[row] = square_pair(image, mask, size)
        return images, masks

    def load_whole(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Each image whole, resized to ``size × size``, and its width / height."""
        out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        aspect = torch.empty(len(indices), dtype=torch.float64)
        for row, i in enumerate(indices):
            image = torch.from_numpy(self.image(int(i))).permute(2, 0, 1)  # (3, H, W)
            aspect[row] = image.shape[2] / image.shape[1]
            out[row] = resize_square(image.unsqueeze(0), size)[0]
        return out, aspect

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            "annotations": self.ann_path.name,
            "files": self.total,
            "paths_sha256": self.paths_hash,
            "n": self.n,
            "seed": self.seed if self.n is not None else None,
            "version": VERSION,
        }


@DATASETS.register(
    "coco",
    description=(
        "COCO instances at PATH: annotations/instances_{train,val}*.json + images in "
        "train*/ and val*/ (polygon or RLE masks); semantic maps 0 = none, 1..K categories, "
        "crowds ignored; n = seeded subset."
    ),
)
def coco(path: str | None, split: str, n: int | None, seed: int) -> SegmentationDataset:
    """Factory of ``coco:PATH``."""
    if split not in SPLITS:
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    return CocoInstances(check_root(path, "coco", _LAYOUT), split, n, seed)
