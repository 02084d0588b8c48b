"""Fine-grained transfer datasets read from their official releases, with the official splits.

``aircraft:PATH``, ``pets:PATH``, ``food101:PATH`` and ``flowers102:PATH`` (Wang et al. Table 5).
``PATH`` is the extracted release folder, or its parent holding the folder under the name
torchvision's reader uses, so a copy torchvision downloaded works as it is (torchvision 0.29
``datasets/fgvc_aircraft.py``, ``oxford_iiit_pet.py``, ``food101.py``, ``flowers102.py``). Their
readers are not used directly: with ``download=False`` they only say "Dataset not found. You can
use download=True", Flowers-102 refuses split files whose md5 differs from the release's
(``flowers102.py`` ``_check_integrity``), and the parsed lists are private attributes. The
parsing below follows theirs line for line (cited per reader) and a test checks the labels
against them.

Splits, as the transfer literature reports them (Kornblith et al. 2019; Ericsson et al. 2021):

* Aircraft: ``train`` = the official ``trainval`` list, ``test`` = ``test``; 100 variants.
* Pets: ``train`` = ``annotations/trainval.txt``, ``test`` = ``annotations/test.txt``; 37 breeds.
* Food-101: ``train`` = ``meta/train.json`` (or ``.txt``), ``test`` = ``meta/test``; 101 dishes.
* Flowers-102: ``train`` = ``trnid`` + ``valid`` of ``setid.mat``, ``test`` = ``tstid``.

A protocol's validation split is carved from ``train`` (never from ``test``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from eqbench.data.base import DATASETS, ImageDataset
from eqbench.data.filelist import listed_split, require, resolve_root
from eqbench.errors import DatasetError

AIRCRAFT_LAYOUT = (
    "Expected the FGVC-Aircraft 2013b release (fgvc-aircraft-2013b.tar.gz) at PATH or "
    "PATH/fgvc-aircraft-2013b: data/images/<id>.jpg, data/variants.txt, "
    "data/images_variant_trainval.txt and data/images_variant_test.txt."
)
PETS_LAYOUT = (
    "Expected Oxford-IIIT Pet (images.tar.gz + annotations.tar.gz) at PATH or "
    "PATH/oxford-iiit-pet: images/<Breed>_<n>.jpg, annotations/trainval.txt and "
    "annotations/test.txt."
)
FOOD_LAYOUT = (
    "Expected Food-101 (food-101.tar.gz) at PATH or PATH/food-101: images/<class>/<id>.jpg and "
    "meta/train.json + meta/test.json (or meta/train.txt + meta/test.txt)."
)
FLOWERS_LAYOUT = (
    "Expected Oxford Flowers-102 at PATH or PATH/flowers-102: jpg/image_<00001>.jpg "
    "(102flowers.tgz), imagelabels.mat and setid.mat."
)

_DESCRIPTIONS = {
    "aircraft": (
        "FGVC-Aircraft 2013b, 100 variants, train = official trainval, test = test: "
        "PATH (or PATH/fgvc-aircraft-2013b)/data/{images/*.jpg, variants.txt, "
        "images_variant_trainval.txt, images_variant_test.txt}; n = seeded subset."
    ),
    "pets": (
        "Oxford-IIIT Pet, 37 breeds, trainval/test: PATH (or PATH/oxford-iiit-pet)/{images/*.jpg, "
        "annotations/trainval.txt, annotations/test.txt}; n = seeded subset."
    ),
    "food101": (
        "Food-101, 101 dishes, train/test: PATH (or PATH/food-101)/{images/<class>/*.jpg, "
        "meta/train.json, meta/test.json (or .txt)}; n = seeded subset."
    ),
    "flowers102": (
        "Oxford Flowers-102, train = trnid + valid, test = tstid: PATH (or PATH/flowers-102)/{jpg/"
        "image_00001.jpg..., imagelabels.mat, setid.mat}; needs scipy; n = seeded subset."
    ),
}


def _lines(file: Path) -> list[str]:
    """Non-empty lines that are not ``#`` comments."""
    text = file.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")


def aircraft_split(root: Path, split: str) -> tuple[list[str], list[int], list[str], list[str]]:
    """``(files, labels, classes, sources)`` of FGVC-Aircraft's variant-level split.

    As torchvision ``fgvc_aircraft.py`` (0.29, ``__init__``): classes are the lines of
    ``data/variants.txt`` in file order; each line of ``data/images_variant_<split>.txt`` is
    ``<image id> <variant name>`` (the name may hold spaces), the image ``data/images/<id>.jpg``.
    """
    official = "trainval" if split == "train" else "test"
    classes_rel = "data/variants.txt"
    list_rel = f"data/images_variant_{official}.txt"
    classes = _lines(require(root, classes_rel, "aircraft", AIRCRAFT_LAYOUT))
    index = {name: i for i, name in enumerate(classes)}
    files, labels = [], []
    for line in _lines(require(root, list_rel, "aircraft", AIRCRAFT_LAYOUT)):
        image_id, _, variant = line.partition(" ")
        if variant not in index:
            raise DatasetError(
                f"aircraft: '{root / list_rel}' names variant '{variant}', which is not in "
                f"'{root / classes_rel}'. Re-extract the release."
            )
        files.append(f"data/images/{image_id}.jpg")
        labels.append(index[variant])
    return files, labels, classes, [classes_rel, list_rel]


def _pets_lines(root: Path, rel: str) -> list[tuple[str, int]]:
    """``(image id, label)`` of each line of a Pet list (``label`` = class id − 1)."""
    rows = []
    for line in _lines(require(root, rel, "pets", PETS_LAYOUT)):
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit() or int(parts[1]) < 1:
            raise DatasetError(
                f"pets: '{root / rel}' line '{line}' is not '<image> <class id> <species> "
                f"<breed id>'. {PETS_LAYOUT}"
            )
        rows.append((parts[0], int(parts[1]) - 1))
    return rows


def pets_split(root: Path, split: str) -> tuple[list[str], list[int], list[str], list[str]]:
    """``(files, labels, classes, sources)`` of Oxford-IIIT Pet.

    As torchvision ``oxford_iiit_pet.py`` (0.29, ``__init__``): each line of
    ``annotations/<split>.txt`` is ``<image id> <class id 1..37> <species> <breed id>``; the
    label is the class id − 1 and the class name the image id without its trailing ``_<n>``.
    Class names come from ``trainval.txt`` for both splits, so they agree.
    """
    official = "trainval" if split == "train" else "test"
    list_rel = f"annotations/{official}.txt"
    names: dict[int, str] = {}
    for image_id, label in _pets_lines(root, "annotations/trainval.txt"):
        names.setdefault(label, image_id.rsplit("_", 1)[0])
    rows = _pets_lines(root, list_rel)
    n_classes = max([*names, *(label for _, label in rows)], default=-1) + 1
    classes = [names.get(i, f"class_{i + 1}") for i in range(n_classes)]
    files = [f"images/{image_id}.jpg" for image_id, _ in rows]
    sources = sorted({"annotations/trainval.txt", list_rel})
    return files, [label for _, label in rows], classes, sources


def food101_split(root: Path, split: str) -> tuple[list[str], list[int], list[str], list[str]]:
    """``(files, labels, classes, sources)`` of Food-101.

    As torchvision ``food101.py`` (0.29, ``__init__``): ``meta/<split>.json`` maps each class to
    its images as ``<class>/<id>`` (``images/<class>/<id>.jpg``); classes are the sorted keys.
    The release's ``meta/<split>.txt`` (one ``<class>/<id>`` a line) is read when there is no
    json.
    """
    json_rel, txt_rel = f"meta/{split}.json", f"meta/{split}.txt"
    entries: dict[str, list[str]] = {}
    if (root / json_rel).is_file():
        source = json_rel
        try:
            data: Any = json.loads((root / json_rel).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"food101: '{root / json_rel}' is not valid JSON ({exc}).") from None
        if not isinstance(data, dict):
            raise DatasetError(f"food101: '{root / json_rel}' is not a class -> images map.")
        entries = {str(k): [str(v) for v in vs] for k, vs in data.items()}
    elif (root / txt_rel).is_file():
        source = txt_rel
        for line in _lines(root / txt_rel):
            entries.setdefault(line.split("/", 1)[0], []).append(line)
    else:
        raise DatasetError(
            f"food101: neither '{root / json_rel}' nor '{root / txt_rel}'. {FOOD_LAYOUT}"
        )
    classes = sorted(entries)
    if (root / "meta/classes.txt").is_file():  # the release's class list: the same sorted names
        classes = sorted(set(classes) | set(_lines(root / "meta/classes.txt")))
    index = {name: i for i, name in enumerate(classes)}
    files, labels = [], []
    for name, images in entries.items():
        for image in images:
            files.append(f"images/{image}.jpg")
            labels.append(index[name])
    return files, labels, classes, [source]


def flowers102_split(root: Path, split: str) -> tuple[list[str], list[int], list[str], list[str]]:
    """``(files, labels, classes, sources)`` of Flowers-102.

    As torchvision ``flowers102.py`` (0.29, ``__init__``): ``setid.mat`` holds the 1-based image
    ids of ``trnid``, ``valid`` and ``tstid``; ``imagelabels.mat`` ``labels`` the 1-based class
    of every image id; the image of id ``i`` is ``jpg/image_{i:05d}.jpg``. ``train`` here is
    ``trnid`` + ``valid`` (torchvision reads them separately).
    """
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        raise DatasetError("flowers102 needs scipy to read .mat files: pip install scipy") from None
    keys = ("trnid", "valid") if split == "train" else ("tstid",)
    setid = require(root, "setid.mat", "flowers102", FLOWERS_LAYOUT)
    labels_file = require(root, "imagelabels.mat", "flowers102", FLOWERS_LAYOUT)
    try:
        ids_mat = loadmat(setid, squeeze_me=True)
        labels_mat = loadmat(labels_file, squeeze_me=True)
    except Exception as exc:  # scipy raises ValueError, MatReadError, ...
        raise DatasetError(f"flowers102: cannot read the .mat files in '{root}' ({exc}).") from None
    missing = [k for k in keys if k not in ids_mat] + (
        ["labels"] if "labels" not in labels_mat else []
    )
    if missing:
        raise DatasetError(
            f"flowers102: {', '.join(missing)} missing from setid.mat / imagelabels.mat in "
            f"'{root}'. {FLOWERS_LAYOUT}"
        )
    all_labels = np.atleast_1d(np.asarray(labels_mat["labels"], dtype=np.int64)) - 1
    ids = np.concatenate([np.atleast_1d(np.asarray(ids_mat[k], dtype=np.int64)) for k in keys])
    if len(ids) and (ids.min() < 1 or ids.max() > len(all_labels)):
        raise DatasetError(
            f"flowers102: setid.mat names image ids outside imagelabels.mat's {len(all_labels)} "
            f"images in '{root}'. Re-download both files."
        )
    n_classes = int(all_labels.max()) + 1 if len(all_labels) else 0
    classes = [f"flower_{i + 1:03d}" for i in range(n_classes)]
    files = [f"jpg/image_{int(i):05d}.jpg" for i in ids]
    labels = [int(all_labels[i - 1]) for i in ids]
    return files, labels, classes, ["setid.mat", "imagelabels.mat"]


def _open(
    name: str,
    path: str | None,
    split: str,
    n: int | None,
    seed: int,
    *,
    subfolder: str,
    marker: str,
    layout: str,
    reader: Any,
    official: dict[str, str],
) -> ImageDataset:
    _check_split(split)
    root = resolve_root(path, name, subfolder, marker, layout)
    return listed_split(name, split, root, reader(root, split), official[split], n, seed)


@DATASETS.register("aircraft", description=_DESCRIPTIONS["aircraft"])
def aircraft(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``aircraft:PATH`` (FGVC-Aircraft, variant level)."""
    return _open(
        "aircraft",
        path,
        split,
        n,
        seed,
        subfolder="fgvc-aircraft-2013b",
        marker="data/variants.txt",
        layout=AIRCRAFT_LAYOUT,
        reader=aircraft_split,
        official={"train": "trainval", "test": "test"},
    )


@DATASETS.register("pets", description=_DESCRIPTIONS["pets"])
def pets(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``pets:PATH`` (Oxford-IIIT Pet, 37 breeds)."""
    return _open(
        "pets",
        path,
        split,
        n,
        seed,
        subfolder="oxford-iiit-pet",
        marker="annotations",
        layout=PETS_LAYOUT,
        reader=pets_split,
        official={"train": "trainval", "test": "test"},
    )


@DATASETS.register("food101", description=_DESCRIPTIONS["food101"])
def food101(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``food101:PATH``."""
    return _open(
        "food101",
        path,
        split,
        n,
        seed,
        subfolder="food-101",
        marker="meta",
        layout=FOOD_LAYOUT,
        reader=food101_split,
        official={"train": "train", "test": "test"},
    )


@DATASETS.register("flowers102", description=_DESCRIPTIONS["flowers102"])
def flowers102(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``flowers102:PATH``."""
    return _open(
        "flowers102",
        path,
        split,
        n,
        seed,
        subfolder="flowers-102",
        marker="setid.mat",
        layout=FLOWERS_LAYOUT,
        reader=flowers102_split,
        official={"train": "trnid+valid", "test": "tstid"},
    )
