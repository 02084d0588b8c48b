"""Dense datasets: built-in shapes, the ade20k / voc / coco loaders on fixtures in their real
layouts, the COCO and ADE20K exports read back by those loaders, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fixtures import make_ade20k, make_coco, make_voc

from eqbench.cli import main
from eqbench.data import IGNORE_INDEX, SegmentationDataset, load_dataset
from eqbench.data.export import ExportConfig, export_shapes
from eqbench.data.shapes import CLASSES, ShapeScenes
from eqbench.errors import ConfigError, DatasetError

pytestmark = pytest.mark.usefixtures("one_thread")


def _shapes(split: str, n: int, seed: int = 0) -> ShapeScenes:
    ds = load_dataset("shapes", split, n=n, seed=seed)
    assert isinstance(ds, ShapeScenes)
    return ds


def test_shapes_deterministic_and_independent_of_n() -> None:
    a_img, a_mask = _shapes("train", 4).load_pair([0, 3], 32)
    b_img, b_mask = _shapes("train", 9).load_pair([0, 3], 32)
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    c_img, _ = _shapes("train", 4, seed=1).load_pair([0], 32)
    assert not torch.equal(a_img[:1], c_img)
    train_photos = {s.photo for s in _shapes("train", 20).scenes}
    test_photos = {s.photo for s in _shapes("test", 20).scenes}
    assert not train_photos & test_photos


def test_shapes_masks_match_pixels_and_instances() -> None:
    ds = _shapes("test", 6)
    images, masks = ds.load_pair(range(6), 48)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 48, 48)
    assert masks.shape == (6, 48, 48) and int(masks.max()) < len(CLASSES)
    assert (masks > 0).any() and (masks == 0).any()
    for i in range(6):
        instances = ds.instances(i, 48)
        union = np.zeros((48, 48), dtype=np.int64)
        for inst in instances:
            union[inst.mask] = inst.category
            x, y, w, h = inst.box
            ys, xs = np.nonzero(inst.mask)
            assert (x, y, w, h) == (
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            )
            # every shape pixel carries the shape's colour
            shape = next(s for s in ds.scenes[i].shapes if s.category == inst.category)
            assert shape.category == inst.category
        assert np.array_equal(union, masks[i].numpy())


def test_shapes_takes_no_path() -> None:
    with pytest.raises(DatasetError, match="export"):
        load_dataset("shapes:/tmp", "train")


def test_ade20k_reduce_zero_label(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path)
    ds = load_dataset(f"ade20k:{tmp_path}", "train")  # the parent of ADEChallengeData2016 works
    assert isinstance(ds, SegmentationDataset) and len(ds) == 3 and ds.num_classes == 150
    _, masks = ds.load_pair([0], 40)  # 40x56 -> shorter side 40, centre crop
    values = set(masks.unique().tolist())
    assert values == {IGNORE_INDEX, 0, 6, 149}
    assert len(load_dataset(f"ade20k:{root}", "test")) == 2


def test_voc_palette_and_ignore(tmp_path: Path) -> None:
    root = make_voc(tmp_path)
    ds = load_dataset(f"voc:{root}", "test")
    assert isinstance(ds, SegmentationDataset) and len(ds) == 2 and ds.num_classes == 21
    _, masks = ds.load_pair([0, 1], 36)  # 48x36 image: no resize, crop rows 6..42
    assert set(masks.unique().tolist()) == {0, 15, IGNORE_INDEX}
    assert int((masks[0] == IGNORE_INDEX).sum()) == 20  # the boundary row
    assert int((masks[0] == 15).sum()) == 19 * 20


def test_coco_polygons_rle_crowds(tmp_path: Path) -> None:
    make_coco(tmp_path)
    ds = load_dataset(f"coco:{tmp_path}", "train")
    assert isinstance(ds, SegmentationDataset)
    assert ds.classes == ["background", "car", "dog"]  # sorted by category id 3, 7
    _, masks = ds.load_pair([0], 30)  # 30x40 image -> crop columns 5..35
    m = masks[0]
    assert int((m == 2).sum()) == 10 * 15  # RLE dog fully inside the crop
    assert int((m == IGNORE_INDEX).sum()) == 5 * 5  # crowd columns 30..35 kept by the crop
    assert int((m == 1).sum()) > 0
    instances = ds.instances(0)  # type: ignore[attr-defined]
    assert [i.category for i in instances] == [1, 2]


@pytest.mark.parametrize(
    ("name", "setup", "message"),
    [
        ("ade20k", lambda p: p / "missing", "does not exist"),
        ("voc", lambda p: p / "missing", "does not exist"),
        ("coco", lambda p: p / "missing", "does not exist"),
        ("ade20k", lambda p: make_ade20k(p, n_train=0), "split is empty"),
        ("voc", lambda p: make_voc(p, n_train=0), "split is empty"),
        ("ade20k", lambda p: (p / "x").mkdir() or p / "x", "images/"),
    ],
)
def test_bad_layouts_name_the_remedy(
    tmp_path: Path, name: str, setup: object, message: str
) -> None:
    root = setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(f"{name}:{root}", "train")
    assert "--dataset" in str(info.value) or "Restore" in str(info.value)


def test_coco_corrupt_json(tmp_path: Path) -> None:
    make_coco(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(DatasetError, match=r"not valid JSON.*export it again"):
        load_dataset(f"coco:{tmp_path}", "test")
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO instances"):
        load_dataset(f"coco:{tmp_path}", "test")


def test_voc_missing_file(tmp_path: Path) -> None:
    root = make_voc(tmp_path)
    next((root / "SegmentationClass").glob("*train*")).unlink()
    with pytest.raises(DatasetError, match="is missing"):
        load_dataset(f"voc:{root}", "train")


@pytest.mark.parametrize("fmt", ["coco", "ade20k"])
def test_export_round_trip(tmp_path: Path, fmt: str) -> None:
    root = export_shapes(ExportConfig(tmp_path / "out", format=fmt, n_train=4, n_val=3, size=40))
    for split, n in (("train", 4), ("test", 3)):
        loaded = load_dataset(f"{fmt}:{root}", split)
        images, masks = loaded.load_pair(range(n), 40)  # type: ignore[attr-defined]
        ref_images, ref_masks = _shapes(split, n).load_pair(range(n), 40)
        if fmt == "ade20k":  # background -> "other" (ignored), shapes 1..5 -> 0..4
            ref_masks = torch.where(ref_masks == 0, IGNORE_INDEX, ref_masks - 1)
        assert torch.equal(masks, ref_masks)
        assert (images.float() - ref_images.float()).abs().mean() < 8  # JPEG
    if fmt == "coco":
        doc = json.loads((root / "annotations" / "instances_train2017.json").read_text())
        ref = _shapes("train", 4)
        assert len(doc["annotations"]) == sum(len(ref.instances(i, 40)) for i in range(4))
        assert {c["name"] for c in doc["categories"]} == set(CLASSES[1:])


def test_export_refuses_non_empty_folder_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_shapes(ExportConfig(out, n_train=1, n_val=1, size=16))
    with pytest.raises(ConfigError, match="format"):
        ExportConfig(tmp_path / "o", format="yolo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_cli_export(tmp_path: Path) -> None:
    out = tmp_path / "ade"
    args = ["data", "export", "shapes", "--format", "ade20k", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--n-train", "2", "--n-val", "1", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "ADEChallengeData2016/annotations/training").glob("*.png"))) == 2
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "not empty" in again.output
