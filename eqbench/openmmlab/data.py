"""The datasets the OpenMMLab tasks read, as files in the layouts mmseg and mmdet load.

``shapes`` (built-in) is exported to a work folder first (:mod:`eqbench.data.export`), with the
split sizes and seed of the run, so the engines read the same scenes eqbench's own loaders
generate; ``ade20k:PATH`` and ``coco:PATH`` are read where they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from eqbench.data.ade20k import ADE20K_CLASSES, ade20k_root
from eqbench.data.base import DatasetSpec
from eqbench.data.coco import annotation_file
from eqbench.data.export import ExportConfig, export_shapes
from eqbench.data.shapes import CLASSES as SHAPES_CLASSES
from eqbench.errors import DatasetError
from eqbench.openmmlab.detection import CocoData
from eqbench.openmmlab.segmentation import SegmentationData

#: Split sizes of a ``shapes`` export when the task leaves ``n_train`` / ``n_test`` unset.
SHAPES_DEFAULT_SIZES = (1000, 200)


def _shapes_sizes(n_train: int | None, n_test: int | None) -> tuple[int, int]:
    return (n_train or SHAPES_DEFAULT_SIZES[0], n_test or SHAPES_DEFAULT_SIZES[1])


def segmentation_data(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> SegmentationData:
    """An ADE20K-layout dataset: ``shapes`` exported under ``work`` (5 classes; the background
    is ADE20K's ignored "other"), or ``ade20k:PATH`` (150 classes, first ``n`` images)."""
    if dataset.name == "shapes":
        n_tr, n_te = _shapes_sizes(n_train, n_test)
        export = ExportConfig(
            out=work / "shapes-ade20k",
            format="ade20k",
            n_train=n_tr,
            n_val=n_te,
            size=size,
            seed=seed,
        )
        return SegmentationData(export_shapes(export), SHAPES_CLASSES[1:], None, None)
    if dataset.name == "ade20k" and dataset.path:
        root = ade20k_root(Path(dataset.path).expanduser())
        return SegmentationData(root, ADE20K_CLASSES, n_train, n_test)
    raise DatasetError(
        f"The mmseg tasks read shapes (built-in) or ade20k:PATH, not '{dataset}'. "
        "Use --dataset shapes or --dataset ade20k:PATH."
    )


def coco_classes(annotations: Path) -> tuple[str, ...]:
    """Category names of a COCO annotation file, in category-id order."""
    doc = json.loads(annotations.read_text())
    cats = sorted(doc.get("categories", []), key=lambda c: c["id"])
    if not cats:
        raise DatasetError(f"'{annotations}' lists no categories; it is not a COCO instances file.")
    return tuple(str(c["name"]) for c in cats)


def coco_data(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> CocoData:
    """A COCO-layout dataset: ``shapes`` exported under ``work`` (5 categories) or
    ``coco:PATH`` (its categories, first ``n`` images of each annotation file, written as a
    subset file under ``work`` so ``CocoMetric`` scores only the images that were predicted)."""
    if dataset.name == "shapes":
        n_tr, n_te = _shapes_sizes(n_train, n_test)
        export = ExportConfig(
            out=work / "shapes-coco", format="coco", n_train=n_tr, n_val=n_te, size=size, seed=seed
        )
        root = export_shapes(export)
        n_train = n_test = None
        classes: tuple[str, ...] | None = SHAPES_CLASSES[1:]
    elif dataset.name == "coco" and dataset.path:
        root = Path(dataset.path).expanduser()
        classes = None
    else:
        raise DatasetError(
            f"The mmdet tasks read shapes (built-in) or coco:PATH, not '{dataset}'. "
            "Use --dataset shapes or --dataset coco:PATH."
        )
    annotations = {split: annotation_file(root, split) for split in ("train", "test")}
    for split, n in (("train", n_train), ("test", n_test)):
        if n is not None:
            annotations[split] = subset_annotations(annotations[split], n, work / "annotations")
    return CocoData(
        root=root,
        annotations=annotations,
        classes=classes or coco_classes(annotations["train"]),
        n_train=None,
        n_test=None,
    )


def subset_annotations(source: Path, n: int, folder: Path) -> Path:
    """Write the first ``n`` images of a COCO annotation file (and their annotations) to
    ``folder`` under the same file name; returns the new file."""
    doc = json.loads(source.read_text())
    images = doc.get("images", [])[:n]
    keep = {img["id"] for img in images}
    doc["images"] = images
    doc["annotations"] = [a for a in doc.get("annotations", []) if a["image_id"] in keep]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / source.name
    out.write_text(json.dumps(doc))
    return out
