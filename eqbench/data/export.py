"""Write the built-in ``shapes`` scenes to disk in the COCO or ADE20K layout.

So the path-based loaders (``coco:PATH``, ``ade20k:PATH``), and tools outside eqbench such as
mmsegmentation and mmdetection, can read a dataset eqbench generates. The export goes to a
temporary folder beside ``out`` that is renamed onto ``out`` only when complete, so a failed
export leaves nothing behind.

* ``coco``: ``annotations/instances_{train,val}2017.json`` (compressed RLE masks, ``bbox``,
  ``area``, ``iscrowd: 0``; categories 1..5 = circle, square, triangle, star, cross) and JPEGs in
  ``train2017/`` and ``val2017/``.
* ``ade20k``: ``ADEChallengeData2016/images/{training,validation}/ADE_*.jpg`` and
  ``annotations/{training,validation}/ADE_*.png`` whose values are the shapes classes (0 =
  background, which ADE20K reads as "other" and ignores; 1..5 the shapes, read back as
  classes 0..4 after reduce-zero-label).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eqbench.data.shapes import CLASSES, ShapeScenes, shapes
from eqbench.errors import ConfigError

FORMATS = ("coco", "ade20k")
_SPLITS = (("train", "train", "training"), ("test", "val", "validation"))


@dataclass(frozen=True)
class ExportConfig:
    """Options of :func:`export_shapes` (the flags of ``eqbench data export shapes``).

    Attributes:
        out: the folder to create (must not exist or be empty).
        format: ``coco`` or ``ade20k``.
        n_train / n_val: number of scenes per split.
        size: image side in pixels.
        seed: scene seed (the same seed gives the same files).
        jpeg_quality: quality of the written JPEGs.
    """

    out: Path
    format: str = "coco"
    n_train: int = 1000
    n_val: int = 200
    size: int = 128
    seed: int = 0
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"Unknown export format '{self.format}'; use coco or ade20k.")
        if self.n_train < 1 or self.n_val < 1:
            raise ConfigError("--n-train and --n-val must be at least 1.")
        if self.size < 8:
            raise ConfigError(f"--size must be at least 8 pixels, got {self.size}.")


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _write_coco_split(ds: ShapeScenes, root: Path, folder: str, cfg: ExportConfig) -> None:
    (root / folder).mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(len(ds)):
        image, _ = ds.render(i, cfg.size)
        name = f"{i + 1:012d}.jpg"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(
            root / folder / name, quality=cfg.jpeg_quality
        )
        images.append({"id": i + 1, "file_name": name, "width": cfg.size, "height": cfg.size})
        for inst in ds.instances(i, cfg.size):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": inst.category,
                    "segmentation": _rle(inst.mask),
                    "area": float(inst.mask.sum()),
                    "bbox": list(inst.box),
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": c, "name": CLASSES[c], "supercategory": "shape"} for c in range(1, len(CLASSES))
    ]
    doc = {
        "info": {"description": f"eqbench shapes, seed {cfg.seed}", "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(doc))


def _write_ade_split(ds: ShapeScenes, root: Path, folder: str, cfg: ExportConfig) -> None:
    images_dir = root / "images" / folder
    labels_dir = root / "annotations" / folder
    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    prefix = "ADE_train" if folder == "training" else "ADE_val"
    for i in range(len(ds)):
        image, ids = ds.render(i, cfg.size)
        stem = f"{prefix}_{i + 1:08d}"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(
            images_dir / f"{stem}.jpg", quality=cfg.jpeg_quality
        )
        label = ds.semantic(i, ids).astype(np.uint8)
        Image.fromarray(label, mode="L").save(labels_dir / f"{stem}.png")


def export_shapes(cfg: ExportConfig) -> Path:
    """Generate the ``shapes`` splits and write them in ``cfg.format`` under ``cfg.out``.

    Returns:
        The dataset root to pass as ``coco:ROOT`` or ``ade20k:ROOT``: ``cfg.out`` for COCO,
        ``cfg.out / "ADEChallengeData2016"`` for ADE20K.

    Raises:
        ConfigError: when ``cfg.out`` exists and is not an empty folder.
    """
    out = cfg.out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"Export folder '{out}' already exists and is not empty. Choose another --out or "
            "delete it."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split, coco_name, ade_name in _SPLITS:
            ds = shapes(None, split, cfg.n_train if split == "train" else cfg.n_val, cfg.seed)
            assert isinstance(ds, ShapeScenes)
            if cfg.format == "coco":
                _write_coco_split(ds, tmp, f"{coco_name}2017", cfg)
            else:
                _write_ade_split(ds, tmp / "ADEChallengeData2016", ade_name, cfg)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out if cfg.format == "coco" else out / "ADEChallengeData2016"
