"""Tiny copies of the transfer datasets in their official on-disk layouts (not a test module).

Each writer puts a few small JPEGs where the release keeps its images, writes the split and
annotation files in the release's formats (text lists, ``.mat`` through ``scipy.io.savemat``,
COCO-style json) and returns what a reader must find: per split, the image paths relative to
the dataset folder and their labels. Every image is a flat colour of its class (plus noise), so a
test can tell from the decoded pixels that the right file was read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Fixture:
    """A written dataset: its folder, class names, and per split (train/test) files + labels."""

    folder: Path
    classes: list[str]
    files: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)

    def add(self, split: str, rel: str, label: int) -> None:
        self.files.setdefault(split, []).append(rel)
        self.labels.setdefault(split, []).append(label)


def class_colour(label: int) -> np.ndarray:
    """The RGB fill of class ``label``'s images."""
    label = int(label)
    return np.array([(60 * label + 30) % 256, (255 - 40 * label) % 256, (90 * label) % 256])


def write_image(path: Path, label: int, seed: int) -> None:
    """A 24×36 JPEG filled with :func:`class_colour` plus a little noise."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(class_colour(label) + rng.integers(-6, 7, size=(24, 36, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)


def make_aircraft(root: Path) -> Fixture:
    """``root/fgvc-aircraft-2013b/data/``: images, variants.txt and the variant split lists."""
    folder = root / "fgvc-aircraft-2013b"
    data = folder / "data"
    classes = ["707-320", "A300B4", "Cessna 172"]  # variant names may hold spaces
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(classes) + "\n")
    fx = Fixture(folder, classes)
    lists: dict[str, list[str]] = {s: [] for s in ("train", "val", "trainval", "test")}
    image_id = 1000000
    for label, name in enumerate(classes):
        for official in ("train", "val", "test", "test"):
            image_id += 7
            write_image(data / "images" / f"{image_id}.jpg", label, image_id)
            lists[official].append(f"{image_id} {name}")
            if official != "test":
                lists["trainval"].append(f"{image_id} {name}")
            fx.add("test" if official == "test" else "train", f"data/images/{image_id}.jpg", label)
    for official, lines in lists.items():
        (data / f"images_variant_{official}.txt").write_text("\n".join(lines) + "\n")
    # the official lists are sorted by image id within the file, not grouped by split
    order = {
        s: sorted(range(len(fx.files[s])), key=lambda i, s=s: fx.files[s][i]) for s in fx.files
    }
    for s, idx in order.items():
        fx.files[s] = [fx.files[s][i] for i in idx]
        fx.labels[s] = [fx.labels[s][i] for i in idx]
    for official in ("trainval", "test"):
        lines = sorted(lists[official])
        (data / f"images_variant_{official}.txt").write_text("\n".join(lines) + "\n")
    return fx


def make_pets(root: Path) -> Fixture:
    """``root/oxford-iiit-pet/``: images/ and annotations/{trainval,test}.txt."""
    folder = root / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # (breed, species)
    fx = Fixture(folder, [b for b, _ in breeds])
    (folder / "annotations").mkdir(parents=True)
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for label, (breed, species) in enumerate(breeds):
        for k in range(1, 6):
            official = "test" if k > 3 else "trainval"
            image_id = f"{breed}_{k}"
            write_image(folder / "images" / f"{image_id}.jpg", label, 100 * label + k)
            lines[official].append(f"{image_id} {label + 1} {species} {k}")
            fx.add("train" if official == "trainval" else "test", f"images/{image_id}.jpg", label)
    for official, rows in lines.items():
        (folder / "annotations" / f"{official}.txt").write_text("\n".join(rows) + "\n")
    return fx


def make_food101(root: Path, as_json: bool = True) -> Fixture:
    """``root/food-101/``: images/<class>/<id>.jpg, meta/{train,test}.json (or .txt), classes."""
    folder = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "waffles"]
    fx = Fixture(folder, classes)
    (folder / "meta").mkdir(parents=True)
    meta: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for label, name in enumerate(classes):
        for k in range(5):
            split = "test" if k >= 3 else "train"
            rel = f"{name}/{1000 + k}"
            write_image(folder / "images" / f"{rel}.jpg", label, 10 * label + k)
            meta[split].setdefault(name, []).append(rel)
            fx.add(split, f"images/{rel}.jpg", label)
    for split, content in meta.items():
        if as_json:
            (folder / "meta" / f"{split}.json").write_text(json.dumps(content))
        else:
            rows = [rel for rels in content.values() for rel in rels]
            (folder / "meta" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    (folder / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    return fx


def make_flowers102(root: Path) -> Fixture:
    """``root/flowers-102/``: jpg/image_%05d.jpg, imagelabels.mat, setid.mat (MATLAB v5)."""
    from scipy.io import savemat

    folder = root / "flowers-102"
    n_images, n_classes = 12, 3
    labels = np.array([1 + (i % n_classes) for i in range(n_images)], dtype=np.uint8)  # 1-based
    ids = {"trnid": [1, 5, 9], "valid": [2, 6, 10], "tstid": [3, 4, 7, 8, 11, 12]}
    fx = Fixture(folder, [f"flower_{i:03d}" for i in range(1, n_classes + 1)])
    for image_id in range(1, n_images + 1):
        write_image(
            folder / "jpg" / f"image_{image_id:05d}.jpg", labels[image_id - 1] - 1, image_id
        )
    # as the release: (1, N) row vectors of doubles / uint8
    savemat(folder / "imagelabels.mat", {"labels": labels[None, :]})
    savemat(
        folder / "setid.mat", {k: np.array(v, dtype=np.uint16)[None, :] for k, v in ids.items()}
    )
    for split, keys in (("train", ("trnid", "valid")), ("test", ("tstid",))):
        for key in keys:
            for image_id in ids[key]:
                fx.add(split, f"jpg/image_{image_id:05d}.jpg", int(labels[image_id - 1]) - 1)
    return fx


def make_inat(root: Path, year: str = "2018", with_categories: bool = True) -> Fixture:
    """``root/``: train<year>.json, val<year>.json (COCO style) and train_val<year>/ images.

    Category ids are not contiguous from 0 (7, 3, 12), to check they are ranked, not used as
    labels; ``with_categories=False`` leaves the files' ``categories`` lists empty.
    """
    cids = [7, 3, 12]
    classes = [f"species_{c}" for c in sorted(cids)]
    fx = Fixture(root, classes)
    image_id = 0
    for split, official in (("train", "train"), ("test", "val")):
        images, annotations = [], []
        for cid in cids:
            label = sorted(cids).index(cid)
            for _ in range(3 if split == "train" else 2):
                image_id += 1
                rel = f"train_val{year}/Plantae/{cid}/{image_id:032x}.jpg"
                write_image(root / rel, label, image_id)
                images.append({"id": image_id, "file_name": rel, "width": 36, "height": 24})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": cid})
                fx.add(split, rel, label)
        categories = [{"id": c, "name": f"species_{c}"} for c in cids] if with_categories else []
        content = {"info": {}, "images": images, "annotations": annotations}
        content["categories"] = categories
        (root / f"{official}{year}.json").write_text(json.dumps(content))
    return fx


WNIDS = ["n01440764", "n01443537", "n01484850"]


def make_imagenet(root: Path, flat_val: bool = False) -> Fixture:
    """``root/train/<wnid>/`` and ``root/val/`` in class folders or flat with the devkit.

    The flat layout numbers classes in the devkit the way ILSVRC does, by ``ILSVRC2012_ID``,
    here in the reverse of the sorted wnid order, with a non-leaf synset in between, so a reader
    that used the ground-truth numbers as labels would get them wrong.
    """
    from scipy.io import savemat

    fx = Fixture(root, list(WNIDS))
    for label, wnid in enumerate(WNIDS):
        for k in range(3):
            rel = f"train/{wnid}/{wnid}_{k}.JPEG"
            write_image(root / rel, label, 10 * label + k)
            fx.add("train", rel, label)
    val_labels = [2, 0, 1, 1, 0, 2]
    if not flat_val:
        for k, label in enumerate(val_labels, 1):
            rel = f"val/{WNIDS[label]}/ILSVRC2012_val_{k:08d}.JPEG"
            write_image(root / rel, label, 1000 + k)
        order = sorted(range(len(val_labels)), key=lambda i: (val_labels[i], i))
        for i in order:
            fx.add(
                "test", f"val/{WNIDS[val_labels[i]]}/ILSVRC2012_val_{i + 1:08d}.JPEG", val_labels[i]
            )
        return fx
    ilsvrc_id = {WNIDS[2]: 1, WNIDS[1]: 2, WNIDS[0]: 3}
    for k, label in enumerate(val_labels, 1):
        rel = f"val/ILSVRC2012_val_{k:08d}.JPEG"
        write_image(root / rel, label, 1000 + k)
        fx.add("test", rel, label)
    devkit = root / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "wordnet_height"]
    synsets = np.zeros((4,), dtype=[(f, object) for f in fields])
    rows = [(ilsvrc_id[w], w, f"class {w}", "", 0, 0) for w in (WNIDS[2], WNIDS[1])]
    rows.append((1001, "n00001740", "entity", "", 3, 18))  # a non-leaf synset
    rows.append((ilsvrc_id[WNIDS[0]], WNIDS[0], "tench", "", 0, 0))
    for i, row in enumerate(rows):
        synsets[i] = row
    savemat(devkit / "meta.mat", {"synsets": synsets[:, None]})
    truth = [ilsvrc_id[WNIDS[label]] for label in val_labels]
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "\n".join(map(str, truth)) + "\n"
    )
    return fx
