"""``voc:PATH``: Pascal VOC 2012 semantic segmentation (21 classes with the background).

Layout (``PATH`` is ``VOC2012/``, or ``VOCdevkit/`` holding it)::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png                 (palette PNG: class index per pixel)
    ImageSets/Segmentation/train.txt, val.txt  (one <id> per line; val is the test split)

Label values are 0 (background) to 20; 255 marks object boundaries and is ignored.
"""

from __future__ import annotations

from pathlib import Path

from eqbench.data.base import DATASETS, check_root
from eqbench.data.dense import MaskFiles, SegmentationDataset
from eqbench.errors import DatasetError

SPLITS = {"train": "train", "test": "val"}
_LAYOUT = (
    "Pass --dataset voc:PATH with PATH the VOC2012 folder holding JPEGImages/, "
    "SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt."
)
#: The 21 classes in label order.
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def voc_root(root: Path) -> Path:
    """``root`` itself or its ``VOC2012`` child, whichever holds ``JPEGImages/``."""
    for candidate in (root, root / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetError(f"'{root}' holds no JPEGImages/ folder (nor VOC2012/JPEGImages/). {_LAYOUT}")


def voc_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, label map)`` paths listed in the split file, in its order."""
    listing = root / "ImageSets" / "Segmentation" / f"{SPLITS[split]}.txt"
    if not listing.is_file():
        raise DatasetError(f"Missing split file '{listing}'. {_LAYOUT}")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"Split file '{listing}' lists no images: the split is empty. {_LAYOUT}")
    pairs = []
    for image_id in ids:
        image = root / "JPEGImages" / f"{image_id}.jpg"
        label = root / "SegmentationClass" / f"{image_id}.png"
        for p in (image, label):
            if not p.is_file():
                raise DatasetError(
                    f"'{listing.name}' lists '{image_id}' but '{p}' is missing. Restore the file "
                    "or remove the id from the split file."
                )
        pairs.append((image, label))
    return pairs


@DATASETS.register(
    "voc",
    description=(
        "Pascal VOC 2012 at PATH (VOC2012/): JPEGImages/*.jpg, SegmentationClass/*.png, "
        "ImageSets/Segmentation/{train,val}.txt; 21 classes, 255 = ignore; n = seeded subset."
    ),
)
def voc(path: str | None, split: str, n: int | None, seed: int) -> SegmentationDataset:
    """Factory of ``voc:PATH``."""
    if split not in SPLITS:
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    root = voc_root(check_root(path, "voc", _LAYOUT))
    return MaskFiles("voc", root, split, voc_pairs(root, split), VOC_CLASSES, False, n, seed)
