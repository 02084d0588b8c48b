"""Transfer datasets read from their official layouts: labels, splits, errors, cache keys."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from transfer_fixtures import (
    Fixture,
    class_colour,
    make_aircraft,
    make_flowers102,
    make_food101,
    make_imagenet,
    make_inat,
    make_pets,
)

from eqbench.data import DATASETS, load_dataset
from eqbench.data.filelist import FileList
from eqbench.errors import DatasetError

MAKERS: dict[str, Callable[[Path], Fixture]] = {
    "aircraft": make_aircraft,
    "pets": make_pets,
    "food101": make_food101,
    "flowers102": make_flowers102,
    "inat2018": make_inat,
    "inat2019": lambda root: make_inat(root, "2019"),
    "imagenet": make_imagenet,
}


def _check(name: str, path: Path, fx: Fixture) -> None:
    for split in ("train", "test"):
        ds = load_dataset(f"{name}:{path}", split)
        assert isinstance(ds, FileList) and ds.name == name and ds.split == split
        assert ds.files == fx.files[split], split
        assert ds.labels.tolist() == fx.labels[split], split
        assert ds.classes == fx.classes
        images = ds.load(range(len(ds)), 16)  # (N, 3, 16, 16) through imagefolder's pipeline
        assert images.shape == (len(ds), 3, 16, 16)
        means = images.float().mean(dim=(2, 3)).numpy()
        expected = np.stack([class_colour(label) for label in fx.labels[split]])
        assert np.abs(means - expected).max() < 8  # each file is its class's colour


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reads_official_layout_with_official_splits(name: str, tmp_path: Path) -> None:
    fx = MAKERS[name](tmp_path / "data")
    _check(name, fx.folder, fx)
    if fx.folder != tmp_path / "data":  # the parent torchvision calls root works too
        _check(name, tmp_path / "data", fx)
    assert "PATH" in DATASETS.describe(name)  # the layout is stated at registration


def test_official_split_sizes(tmp_path: Path) -> None:
    aircraft = make_aircraft(tmp_path / "a")  # trainval = train + val lists
    assert len(aircraft.files["train"]) == 6 and len(aircraft.files["test"]) == 6
    flowers = load_dataset(f"flowers102:{make_flowers102(tmp_path / 'f').folder}", "train")
    assert flowers.fingerprint()["official_split"] == "trnid+valid" and len(flowers) == 6


def test_food101_text_lists(tmp_path: Path) -> None:
    fx = make_food101(tmp_path, as_json=False)
    _check("food101", fx.folder, fx)


def test_inat_without_category_list_ranks_annotation_ids(tmp_path: Path) -> None:
    fx = make_inat(tmp_path, with_categories=False)
    test = load_dataset(f"inat2018:{tmp_path}", "test")
    assert test.labels.tolist() == fx.labels["test"]
    assert test.classes == ["3", "7", "12"]  # no names anywhere: the ids, ascending


def test_imagenet_flat_val_with_devkit(tmp_path: Path) -> None:
    fx = make_imagenet(tmp_path, flat_val=True)
    _check("imagenet", tmp_path, fx)


def test_imagenet_flat_val_with_kaggle_solution(tmp_path: Path) -> None:
    fx = make_imagenet(tmp_path, flat_val=True)
    devkit = tmp_path / "ILSVRC2012_devkit_t12/data"
    for file in devkit.iterdir():
        file.unlink()
    rows = ["ImageId,PredictionString"]
    for rel, label in zip(fx.files["test"], fx.labels["test"], strict=True):
        image_id = Path(rel).stem
        rows.append(f"{image_id},{fx.classes[label]} 1 2 30 40 {fx.classes[label]} 3 4 5 6")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    assert load_dataset(f"imagenet:{tmp_path}", "test").labels.tolist() == fx.labels["test"]


@pytest.mark.parametrize(
    ("name", "remove", "match"),
    [
        ("aircraft", "fgvc-aircraft-2013b/data/images_variant_test.txt", "images_variant_test"),
        ("aircraft", "fgvc-aircraft-2013b/data/variants.txt", "variants.txt"),
        ("pets", "oxford-iiit-pet/annotations/test.txt", "annotations/test.txt"),
        ("food101", "food-101/meta/test.json", "meta/test.json"),
        ("flowers102", "flowers-102/setid.mat", "setid.mat"),
        ("flowers102", "flowers-102/imagelabels.mat", "imagelabels.mat"),
        ("inat2018", "val2018.json", "val2018.json"),
        ("imagenet", "val", "val"),
    ],
)
def test_missing_files_name_the_expected_layout(
    name: str, remove: str, match: str, tmp_path: Path
) -> None:
    MAKERS[name](tmp_path)
    target = tmp_path / remove
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(f"{name}:{tmp_path}", "test")
    assert "Expected" in str(info.value)  # the message names the layout


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_no_path_and_wrong_path(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"{name}:PATH"):
        load_dataset(name, "train")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"{name}:{tmp_path / 'nope'}", "train")


def test_listed_image_missing(tmp_path: Path) -> None:
    fx = make_pets(tmp_path)
    (fx.folder / fx.files["test"][0]).unlink()
    with pytest.raises(DatasetError, match=r"listed in annotations.*missing"):
        load_dataset(f"pets:{tmp_path}", "test")


def test_imagenet_flat_val_without_labels(tmp_path: Path) -> None:
    make_imagenet(tmp_path, flat_val=True)
    (tmp_path / "ILSVRC2012_devkit_t12/data/meta.mat").unlink()
    with pytest.raises(DatasetError, match=r"ground_truth.*meta\.mat.*LOC_val_solution"):
        load_dataset(f"imagenet:{tmp_path}", "test")


def test_malformed_split_files(tmp_path: Path) -> None:
    fx = make_pets(tmp_path / "p")
    (fx.folder / "annotations/test.txt").write_text("Abyssinian_4 one 1 1\n")
    with pytest.raises(DatasetError, match="is not '<image> <class id>"):
        load_dataset(f"pets:{fx.folder}", "test")
    make_inat(tmp_path / "i")
    (tmp_path / "i/val2018.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(DatasetError, match="has no annotation"):
        load_dataset(f"inat2018:{tmp_path / 'i'}", "test")
    (tmp_path / "i/val2018.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(f"inat2018:{tmp_path / 'i'}", "test")


def test_inat_pairs_by_image_id_and_refuses_unknown_categories(tmp_path: Path) -> None:
    """Annotations pair with images by image id, not by position; a label outside the
    category list and a file that is not COCO style are refused by name."""
    fx = make_inat(tmp_path, "2019")
    val = tmp_path / "val2019.json"
    content = json.loads(val.read_text())
    content["annotations"].reverse()
    val.write_text(json.dumps(content))
    assert load_dataset(f"inat2019:{tmp_path}", "test").labels.tolist() == fx.labels["test"]
    content["annotations"][0]["category_id"] = 99
    val.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match="category 99, which its category list does not hold"):
        load_dataset(f"inat2019:{tmp_path}", "test")
    val.write_text(json.dumps([1, 2]))
    with pytest.raises(DatasetError, match="has no 'images' list"):
        load_dataset(f"inat2019:{tmp_path}", "test")


def test_cache_key_follows_images_and_split_files(tmp_path: Path) -> None:
    """As imagefolder's: a replaced image or an edited split file changes the fingerprint."""
    fx = make_food101(tmp_path)
    spec = f"food101:{tmp_path}"
    before = load_dataset(spec, "train").digest()
    assert load_dataset(spec, "train").digest() == before  # stable
    image = fx.folder / fx.files["train"][0]
    st = os.stat(image)
    image.write_bytes(image.read_bytes())  # same name and bytes, new change time
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after_image = load_dataset(spec, "train").digest()
    assert after_image != before
    meta = fx.folder / "meta/train.json"
    content = json.loads(meta.read_text())
    content["apple_pie"] = content["apple_pie"][::-1]  # same images, another order
    meta.write_text(json.dumps(content))
    assert load_dataset(spec, "train").digest() not in (before, after_image)


def test_seeded_subset(tmp_path: Path) -> None:
    make_inat(tmp_path)
    a = load_dataset(f"inat2018:{tmp_path}", "train", n=4, seed=3)
    b = load_dataset(f"inat2018:{tmp_path}", "train", n=4, seed=3)
    assert len(a) == 4 and a.files == b.files and a.digest() == b.digest()
    assert a.digest() != load_dataset(f"inat2018:{tmp_path}", "train").digest()


def _tv_files(ref: object) -> list[object]:
    """The image paths a torchvision reader parsed (``_images`` in OxfordIIITPet)."""
    files = getattr(ref, "_image_files", None)
    return list(files if files is not None else ref._images)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["aircraft", "pets", "food101", "flowers102"])
def test_labels_match_torchvision(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision 0.29's readers, on the same files, give the same images and labels."""
    import torchvision.datasets as tvd

    fx = MAKERS[name](tmp_path)
    if name == "flowers102":  # torchvision checks the release's md5 of the .mat files
        monkeypatch.setattr(tvd.Flowers102, "_check_integrity", lambda self: True)
    make = {
        "aircraft": lambda s: [tvd.FGVCAircraft(str(tmp_path), split=s)],
        "pets": lambda s: [tvd.OxfordIIITPet(str(tmp_path), split=s)],
        "food101": lambda s: [tvd.Food101(str(tmp_path), split=s)],
        "flowers102": lambda s: (
            [
                tvd.Flowers102(str(tmp_path), split="train"),
                tvd.Flowers102(str(tmp_path), split="val"),
            ]
            if s == "trainval"
            else [tvd.Flowers102(str(tmp_path), split=s)]
        ),
    }[name]
    for split, official in (
        ("train", "train" if name == "food101" else "trainval"),
        ("test", "test"),
    ):
        ours = load_dataset(f"{name}:{tmp_path}", split)
        pairs = [
            (os.path.relpath(str(f), fx.folder), int(label))
            for ref in make(official)
            for f, label in zip(_tv_files(ref), ref._labels, strict=True)
        ]
        assert sorted(pairs) == sorted(zip(ours.files, ours.labels.tolist(), strict=True))
