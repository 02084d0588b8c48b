"""``ade20k:PATH``: ADE20K (SceneParsing, 150 classes) in the ``ADEChallengeData2016`` layout.

Layout (``PATH`` is ``ADEChallengeData2016/`` or the folder holding it)::

    images/training/*.jpg        annotations/training/*.png     (train split)
    images/validation/*.jpg      annotations/validation/*.png   (test split)

Label maps hold 0 for "other" and 1..150 for the classes; as in mmseg (``reduce_zero_label``),
0 becomes the ignore index 255 and ``v`` becomes ``v - 1``, so scored classes are 0..149 in the
order of :data:`ADE20K_CLASSES`. An image without a label map of the same stem is an error.
"""

from __future__ import annotations

from pathlib import Path

from eqbench.data.base import DATASETS, check_root
from eqbench.data.dense import MaskFiles, SegmentationDataset
from eqbench.errors import DatasetError

FOLDER = "ADEChallengeData2016"
SPLITS = {"train": "training", "test": "validation"}
_LAYOUT = (
    "Pass --dataset ade20k:PATH with PATH the ADEChallengeData2016 folder holding "
    "images/{training,validation}/*.jpg and annotations/{training,validation}/*.png."
)

#: The 150 SceneParsing classes in label order (mmseg's ``ADE20KDataset``).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashtray", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip


def ade20k_root(root: Path) -> Path:
    """``root`` itself or its ``ADEChallengeData2016`` child, whichever holds ``images/``."""
    if (root / "images").is_dir():
        return root
    if (root / FOLDER / "images").is_dir():
        return root / FOLDER
    raise DatasetError(f"'{root}' holds no images/ folder (nor {FOLDER}/images/). {_LAYOUT}")


def ade20k_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Sorted ``(image, label map)`` paths of ``split``; every image needs its label map."""
    folder = SPLITS[split]
    images_dir, labels_dir = root / "images" / folder, root / "annotations" / folder
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise DatasetError(f"Missing folder '{d}'. {_LAYOUT}")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not images:
        raise DatasetError(f"'{images_dir}' holds no .jpg images: the split is empty. {_LAYOUT}")
    pairs = []
    for image in images:
        label = labels_dir / f"{image.stem}.png"
        if not label.is_file():
            raise DatasetError(
                f"Image '{image}' has no label map '{label}'. Restore it or remove the image."
            )
        pairs.append((image, label))
    return pairs


@DATASETS.register(
    "ade20k",
    description=(
        "ADE20K SceneParsing at PATH (ADEChallengeData2016/): images/{training,validation}/"
        "*.jpg + annotations/{training,validation}/*.png; 150 classes, 0 = other (ignored, "
        "reduce-zero-label as in mmseg); n = seeded subset."
    ),
)
def ade20k(path: str | None, split: str, n: int | None, seed: int) -> SegmentationDataset:
    """Factory of ``ade20k:PATH``."""
    if split not in SPLITS:
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    root = ade20k_root(check_root(path, "ade20k", _LAYOUT))
    return MaskFiles(
        "ade20k", root, split, ade20k_pairs(root, split), ADE20K_CLASSES, True, n, seed
    )
