"""``inat2018:PATH`` and ``inat2019:PATH``: the iNaturalist competition releases.

Layout (the extracted ``train_val<year>.tar.gz`` and ``train<year>.json.tar.gz`` /
``val<year>.json.tar.gz`` side by side)::

    PATH/train<year>.json   # COCO style: images [{id, file_name}], annotations [{image_id,
    PATH/val<year>.json     #   category_id}], categories [{id, name}]
    PATH/train_val<year>/<supercategory>/<category id>/<hash>.jpg   (the json's file_name)

``train`` is ``train<year>.json``, ``test`` is ``val<year>.json`` (the labelled split every
paper reports on; the competition's test set has no public labels). Classes are the category
ids in ascending order (iNat 2018: 8142, 2019: 1010), taken from the split file's
``categories`` (or, where a file lists none, from the train file's annotations); names come
from ``name`` when set, else from ``categories.json`` beside the split files (the 2018
release), else the id. torchvision's ``INaturalist`` (0.29, ``datasets/inaturalist.py``) is not
used: for 2017–2019 it indexes the ``train_val<year>`` folder tree and ignores the json files,
so it has no official train/val split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eqbench.data.base import DATASETS, ImageDataset
from eqbench.data.filelist import listed_split, resolve_root
from eqbench.errors import DatasetError

YEARS = ("2018", "2019")


def _layout(year: str) -> str:
    return (
        f"Expected PATH/train{year}.json, PATH/val{year}.json (COCO style: images, annotations, "
        f"categories) and the images they name under PATH/train_val{year}/."
    )


_DESCRIPTIONS = {
    f"inat{year}": (
        f"iNaturalist {year}, train = train{year}.json, test = val{year}.json: "
        f"PATH/{{train{year}.json, val{year}.json, train_val{year}/<super>/<id>/*.jpg}}; "
        "n = seeded subset."
    )
    for year in YEARS
}


def _read_json(file: Path, year: str) -> dict[str, Any]:
    if not file.is_file():
        raise DatasetError(f"inat{year}: '{file}' is missing. {_layout(year)}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"inat{year}: '{file}' is not valid JSON ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"inat{year}: '{file}' has no 'images' list. {_layout(year)}")
    if not isinstance(data.get("annotations"), list):
        raise DatasetError(f"inat{year}: '{file}' has no 'annotations' list. {_layout(year)}")
    return data


def _category_names(root: Path, data: dict[str, Any], ids: list[int]) -> list[str]:
    """Names of the category ``ids``: the split file's ``name``s, else ``categories.json``."""
    names = {int(c["id"]): str(c.get("name") or "") for c in data.get("categories") or []}
    extra = root / "categories.json"
    if not all(names.get(i) for i in ids) and extra.is_file():
        try:
            listed = json.loads(extra.read_text(encoding="utf-8"))
            names.update({int(c["id"]): str(c.get("name") or "") for c in listed})
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            pass  # names are cosmetic; ids still identify the classes
    return [names.get(i) or str(i) for i in ids]


def inat_split(
    root: Path, split: str, year: str
) -> tuple[list[str], list[int], list[str], list[str]]:
    """``(files, labels, classes, sources)`` of an iNaturalist split (see the module docstring)."""
    rel = f"{'train' if split == 'train' else 'val'}{year}.json"
    data = _read_json(root / rel, year)
    sources = [rel]
    ids = sorted({int(c["id"]) for c in data.get("categories") or []})
    if not ids:  # no category list: the train file's annotations define the classes
        train = data if split == "train" else _read_json(root / f"train{year}.json", year)
        ids = sorted({int(a["category_id"]) for a in train["annotations"]})
        sources = sorted({rel, f"train{year}.json"})
    index = {cid: i for i, cid in enumerate(ids)}
    category = {int(a["image_id"]): int(a["category_id"]) for a in data["annotations"]}
    files, labels = [], []
    for image in data["images"]:
        cid = category.get(int(image["id"]))
        if cid is None:
            raise DatasetError(
                f"inat{year}: image {image['id']} of '{root / rel}' has no annotation. "
                "Re-extract the json file."
            )
        if cid not in index:
            raise DatasetError(
                f"inat{year}: '{root / rel}' labels image {image['id']} with category {cid}, "
                "which its category list does not hold. Re-extract the json file."
            )
        files.append(str(image["file_name"]))
        labels.append(index[cid])
    return files, labels, _category_names(root, data, ids), sources


def _open(year: str, path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    name = f"inat{year}"
    root = resolve_root(path, name, f"inat{year}", f"train{year}.json", _layout(year))
    try:
        listing = inat_split(root, split, year)
    except (KeyError, TypeError, ValueError) as exc:  # an entry without id / category_id / ...
        raise DatasetError(
            f"{name}: a split file in '{root}' has a malformed entry ({type(exc).__name__}: "
            f"{exc}). {_layout(year)}"
        ) from None
    official = "train" if split == "train" else "val"
    return listed_split(name, split, root, listing, official, n, seed)


@DATASETS.register("inat2018", description=_DESCRIPTIONS["inat2018"])
def inat2018(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``inat2018:PATH``."""
    return _open("2018", path, split, n, seed)


@DATASETS.register("inat2019", description=_DESCRIPTIONS["inat2019"])
def inat2019(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``inat2019:PATH``."""
    return _open("2019", path, split, n, seed)
