"""``inat2019:PATH``: the official iNaturalist 2019 layout, on a miniature fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eqbench.data.base import load_dataset
from eqbench.errors import DatasetError


def write_inat(root: Path, seed: int = 0) -> Path:
    """A miniature iNaturalist 2019 release: 3 categories (ids 0-2, listed out of order),
    4 train and 2 val images each, under train_val2019/<kingdom>/<id>/."""
    rng = np.random.default_rng(seed)
    cats = [{"id": i, "name": f"species_{i}", "kingdom": "Plants"} for i in (2, 0, 1)]
    for split, per in (("train", 4), ("val", 2)):
        images, annotations = [], []
        for c in range(3):
            for j in range(per):
                name = f"train_val2019/Plants/{c}/{split}_{j}.jpg"
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(rng.normal(60 * (c + 1), 10, (20, 30, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(path)
                image_id = len(images) + (0 if split == "train" else 1000)
                images.append({"id": image_id, "file_name": name, "width": 30, "height": 20})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": c})
        annotations.reverse()  # pairing goes by image id, not by position
        data = {"images": images, "annotations": annotations, "categories": cats}
        (root / f"{split}2019.json").write_text(json.dumps(data))
    return root


def test_inat2019_reads_the_official_layout(tmp_path: Path) -> None:
    root = write_inat(tmp_path / "inat")
    train = load_dataset(f"inat2019:{root}", "train")
    test = load_dataset(f"inat2019:{root}", "test")
    assert train.classes == ["species_0", "species_1", "species_2"] == test.classes
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    images = test.load([0, 5], 16)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    assert images[1].float().mean() > images[0].float().mean() + 60  # class 2 is brighter
    sub = load_dataset(f"inat2019:{root}", "train", n=5, seed=3)
    assert len(sub) == 5 and sub.fingerprint()["n"] == 5
    assert set(sub.files) <= set(train.files)  # type: ignore[attr-defined]
    assert test.fingerprint()["json"] == "val2019.json"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_json", "Missing annotation file"),
        ("no_label", "without a label"),
        ("unknown_category", "which 'train2019.json' does not list"),
        ("missing_image", "does not exist"),
        ("not_coco", "is not a COCO-style annotation file"),
    ],
)
def test_inat2019_bad_layouts_name_the_problem(tmp_path: Path, damage: str, message: str) -> None:
    root = write_inat(tmp_path / "inat")
    val = root / "val2019.json"
    data = json.loads(val.read_text())
    if damage == "no_json":
        val.unlink()
    elif damage == "no_label":
        data["annotations"].pop()
    elif damage == "unknown_category":
        data["annotations"][0]["category_id"] = 7
    elif damage == "missing_image":
        (root / data["images"][0]["file_name"]).unlink()
    elif damage == "not_coco":
        data = [1, 2]
    if damage != "no_json":
        val.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"inat2019:{root}", "test").load([0], 8)
