"""``imagenet:PATH``: ILSVRC-2012 (ImageNet-1k), train/ and val/ with the official labels.

Layout::

    PATH/train/<wnid>/*.JPEG                       # ILSVRC2012_img_train.tar, class tars unpacked
    PATH/val/<wnid>/*.JPEG                         # val in class folders (the common layout), or
    PATH/val/ILSVRC2012_val_00000001.JPEG ...      # val flat, as in ILSVRC2012_img_val.tar, with
    PATH/ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}
                                                   #   (ILSVRC2012_devkit_t12.tar.gz extracted)
                                                   #   or PATH/LOC_val_solution.csv (Kaggle)

Classes are the 1000 sorted WordNet ids of ``train/`` (index 0 = n01440764, as torchvision's
``ImageNet`` and every ImageFolder-based reader number them). ``test`` is the official
validation set (50 000 images). The devkit's ground truth numbers classes by ``ILSVRC2012_ID``
(meta.mat order, not sorted wnids); it is mapped to wnids through ``meta.mat``'s ``synsets`` as
torchvision 0.29 ``datasets/imagenet.py`` ``parse_devkit_archive`` does (``parse_meta_mat``,
``parse_val_groundtruth_txt``). torchvision's ``ImageNet`` itself is not used: it needs the
devkit *archive* and rewrites the val folder into class folders on first use.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from eqbench.data.base import DATASETS, ImageDataset, check_root
from eqbench.data.filelist import listed_split
from eqbench.data.imagefolder import _class_dirs, _image_files, _is_image
from eqbench.errors import DatasetError

DEVKIT = "ILSVRC2012_devkit_t12/data"
GROUND_TRUTH = f"{DEVKIT}/ILSVRC2012_validation_ground_truth.txt"
META = f"{DEVKIT}/meta.mat"
KAGGLE = "LOC_val_solution.csv"

_LAYOUT = (
    "Expected PATH/train/<wnid>/*.JPEG and PATH/val/<wnid>/*.JPEG, or a flat PATH/val/ "
    f"(ILSVRC2012_val_*.JPEG) with PATH/{GROUND_TRUTH} and PATH/{META} (the extracted devkit) "
    f"or PATH/{KAGGLE}."
)

_DESCRIPTIONS = {
    "imagenet": (
        "ImageNet-1k (ILSVRC-2012), train/val, classes = sorted train/ wnids: PATH/train/<wnid>/"
        f"*.JPEG and PATH/val/<wnid>/*.JPEG, or flat PATH/val/ with PATH/{DEVKIT}/{{meta.mat, "
        f"ILSVRC2012_validation_ground_truth.txt}} or PATH/{KAGGLE}; n = seeded subset."
    )
}

_VAL_INDEX = re.compile(r"ILSVRC2012_val_(\d{8})")


def _devkit_wnids(root: Path) -> list[str]:
    """The validation wnid of each image, in ``ILSVRC2012_val_<k>`` order, from the devkit.

    ``meta.mat``'s ``synsets`` lists every synset; the 1000 leaves (``num_children == 0``)
    carry the ``ILSVRC2012_ID`` (1..1000) the ground-truth file's lines use.
    """
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        raise DatasetError("Reading the ImageNet devkit needs scipy: pip install scipy") from None
    try:
        synsets = loadmat(root / META, squeeze_me=True)["synsets"]
        wnid_of = {
            int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0
        }
    except Exception as exc:  # scipy's MatReadError, a missing field, ...
        raise DatasetError(
            f"imagenet: cannot read the synsets of '{root / META}' ({type(exc).__name__}: {exc}). "
            "Re-extract ILSVRC2012_devkit_t12.tar.gz."
        ) from None
    wnids = []
    for line in (root / GROUND_TRUTH).read_text(encoding="utf-8").split():
        if int(line) not in wnid_of:
            raise DatasetError(
                f"imagenet: '{root / GROUND_TRUTH}' names class {line}, which '{root / META}' "
                "does not hold. Re-extract the devkit."
            )
        wnids.append(wnid_of[int(line)])
    return wnids


def _kaggle_wnids(root: Path) -> dict[str, str]:
    """``image id -> wnid`` from Kaggle's ``LOC_val_solution.csv`` (first box's class)."""
    with (root / KAGGLE).open(encoding="utf-8", newline="") as f:
        return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)}


def _flat_val(root: Path, classes: list[str]) -> tuple[list[str], list[int], list[str]]:
    """Files, labels and label sources of a flat ``val/`` folder."""
    folder = root / "val"
    files = sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
    if (root / GROUND_TRUTH).is_file() and (root / META).is_file():
        sources = [GROUND_TRUTH, META]
        truth = _devkit_wnids(root)

        def wnid(name: str) -> str | None:
            match = _VAL_INDEX.search(name)
            k = int(match.group(1)) if match else 0
            return truth[k - 1] if 1 <= k <= len(truth) else None

    elif (root / KAGGLE).is_file():
        sources = [KAGGLE]
        table = _kaggle_wnids(root)

        def wnid(name: str) -> str | None:
            return table.get(os.path.splitext(name)[0])

    else:
        raise DatasetError(
            f"imagenet: '{folder}' holds images but no class folders, and the labels are "
            f"missing: neither '{root / GROUND_TRUTH}' with '{root / META}' nor "
            f"'{root / KAGGLE}'. {_LAYOUT}"
        )
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for name in files:
        w = wnid(name)
        if w is None or w not in index:
            raise DatasetError(
                f"imagenet: no label for '{folder / name}' in {' / '.join(sources)}, or its "
                f"class is not a train/ folder. {_LAYOUT}"
            )
        labels.append(index[w])
    return [f"val/{name}" for name in files], labels, sources


def _class_folders(root: Path, split_dir: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """Files and labels of ``root/split_dir/<wnid>/`` class folders."""
    index = {name: i for i, name in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    for name in _class_dirs(root / split_dir):
        if name not in index:
            raise DatasetError(
                f"imagenet: class folder '{root / split_dir / name}' is not a train/ class. "
                f"{_LAYOUT}"
            )
        found = _image_files(root / split_dir / name)
        files.extend(f"{split_dir}/{name}/{f}" for f in found)
        labels.extend([index[name]] * len(found))
    return files, labels


@DATASETS.register("imagenet", description=_DESCRIPTIONS["imagenet"])
def imagenet(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``imagenet:PATH``."""
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    root = check_root(path, "imagenet", _LAYOUT)
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise DatasetError(f"imagenet: '{root / sub}' is missing. {_LAYOUT}")
    classes = _class_dirs(root / "train")
    if not classes:
        raise DatasetError(f"imagenet: '{root / 'train'}' holds no class folders. {_LAYOUT}")
    sources: list[str] = []
    if split == "train":
        files, labels = _class_folders(root, "train", classes)
    elif _class_dirs(root / "val"):
        files, labels = _class_folders(root, "val", classes)
    else:
        files, labels, sources = _flat_val(root, classes)
    official = "train" if split == "train" else "val"
    listing = (files, labels, classes, sources)
    # the files were found by listing the folders: no need to check that they exist
    return listed_split("imagenet", split, root, listing, official, n, seed, check_files=False)
