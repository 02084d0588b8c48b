"""The datasets the OpenMMLab tasks read, as files in the layouts mmseg and mmdet load.

``shapes`` (built-in) is exported to a work folder first (:mod:`eqbench.data.export`), with the
split sizes and seed of the run, so the engines read the same scenes eqbench's own loaders
generate; ``ade20k:PATH`` and ``coco:PATH`` are read where they are. Each dataset is one
function registered under its name in :data:`SEGMENTATION_SOURCES` or :data:`COCO_SOURCES`; a new
one is a new registration, not an edit of a dispatch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from eqbench.data.ade20k import ADE20K_CLASSES, ade20k_root
from eqbench.data.base import DatasetSpec
from eqbench.data.coco import annotation_file
from eqbench.data.export import ExportConfig, export_shapes
from eqbench.data.shapes import CLASSES as SHAPES_CLASSES
from eqbench.errors import DatasetError
from eqbench.openmmlab.detection import CocoData
from eqbench.openmmlab.segmentation import SegmentationData
from eqbench.registry import Registry

#: Split sizes of a ``shapes`` export when the task leaves ``n_train`` / ``n_test`` unset.
SHAPES_DEFAULT_SIZES = (1000, 200)


def _shapes_sizes(n_train: int | None, n_test: int | None) -> tuple[int, int]:
    return (n_train or SHAPES_DEFAULT_SIZES[0], n_test or SHAPES_DEFAULT_SIZES[1])


#: ``(dataset, n_train, n_test, size, seed, work) -> SegmentationData`` of one dataset name.
SegmentationSource = Callable[
    [DatasetSpec, int | None, int | None, int, int, Path], SegmentationData
]
#: ``(dataset, n_train, n_test, size, seed, work) -> (root, classes or None, n_train, n_test)``:
#: a folder in the COCO layout (``annotation_file`` finds its files) and the images to keep.
CocoSource = Callable[
    [DatasetSpec, int | None, int | None, int, int, Path],
    tuple[Path, tuple[str, ...] | None, int | None, int | None],
]

#: The datasets the mmseg tasks read, registered by dataset name (one function each).
SEGMENTATION_SOURCES: Registry[SegmentationSource] = Registry(
    "mmseg dataset", "eqbench ls datasets"
)
#: The datasets the mmdet tasks read, registered by dataset name (one function each).
COCO_SOURCES: Registry[CocoSource] = Registry("mmdet dataset", "eqbench ls datasets")


def _needs_path(dataset: DatasetSpec) -> Path:
    if not dataset.path:
        raise DatasetError(f"'{dataset.name}' needs a path: --dataset {dataset.name}:PATH.")
    return Path(dataset.path).expanduser()


@SEGMENTATION_SOURCES.register("shapes")
def _shapes_ade20k(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> SegmentationData:
    """``shapes`` exported under ``work`` in the ADE20K layout (5 classes; the background is
    ADE20K's ignored "other")."""
    n_tr, n_te = _shapes_sizes(n_train, n_test)
    export = ExportConfig(
        out=work / "shapes-ade20k", format="ade20k", n_train=n_tr, n_val=n_te, size=size, seed=seed
    )
    return SegmentationData(export_shapes(export), SHAPES_CLASSES[1:], None, None)


@SEGMENTATION_SOURCES.register("ade20k")
def _ade20k(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> SegmentationData:
    """``ade20k:PATH`` where it is (150 classes, first ``n`` images)."""
    root = ade20k_root(_needs_path(dataset))
    return SegmentationData(root, ADE20K_CLASSES, n_train, n_test)


def segmentation_data(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> SegmentationData:
    """An ADE20K-layout dataset from its :data:`SEGMENTATION_SOURCES` entry."""
    if dataset.name not in SEGMENTATION_SOURCES:
        names = SEGMENTATION_SOURCES.names()
        raise DatasetError(
            f"The mmseg tasks read {', '.join(names)}, not '{dataset}'. "
            "Use --dataset shapes or --dataset ade20k:PATH."
        )
    return SEGMENTATION_SOURCES.get(dataset.name)(dataset, n_train, n_test, size, seed, work)


def coco_classes(annotations: Path) -> tuple[str, ...]:
    """Category names of a COCO annotation file, in category-id order."""
    doc = json.loads(annotations.read_text())
    cats = sorted(doc.get("categories", []), key=lambda c: c["id"])
    if not cats:
        raise DatasetError(f"'{annotations}' lists no categories; it is not a COCO instances file.")
    return tuple(str(c["name"]) for c in cats)


@COCO_SOURCES.register("shapes")
def _shapes_coco(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> tuple[Path, tuple[str, ...] | None, int | None, int | None]:
    """``shapes`` exported under ``work`` in the COCO layout (5 categories, every image)."""
    n_tr, n_te = _shapes_sizes(n_train, n_test)
    export = ExportConfig(
        out=work / "shapes-coco", format="coco", n_train=n_tr, n_val=n_te, size=size, seed=seed
    )
    return export_shapes(export), SHAPES_CLASSES[1:], None, None


@COCO_SOURCES.register("coco")
def _coco(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> tuple[Path, tuple[str, ...] | None, int | None, int | None]:
    """``coco:PATH`` where it is (its own categories, first ``n`` images)."""
    return _needs_path(dataset), None, n_train, n_test


def coco_data(
    dataset: DatasetSpec, n_train: int | None, n_test: int | None, size: int, seed: int, work: Path
) -> CocoData:
    """A COCO-layout dataset from its :data:`COCO_SOURCES` entry; ``n`` keeps the first images
    of each annotation file, written as a subset file under ``work`` so ``CocoMetric`` scores
    only the images that were predicted."""
    if dataset.name not in COCO_SOURCES:
        raise DatasetError(
            f"The mmdet tasks read {', '.join(COCO_SOURCES.names())}, not '{dataset}'. "
            "Use --dataset shapes or --dataset coco:PATH."
        )
    source = COCO_SOURCES.get(dataset.name)
    root, classes, n_train, n_test = source(dataset, n_train, n_test, size, seed, work)
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
