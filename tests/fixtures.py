"""Tiny on-disk fixtures in the real formats of the path-based datasets (not a test module).

* :func:`make_imagefolder` writes an ImageNet-layout tree of PNG and JPEG files.
* :func:`make_cifar10` / :func:`make_cifar100` write batches the way the official archives hold
  them: Python 2 protocol-2 pickles whose strings are Python 2 ``str`` (``SHORT_BINSTRING``), a
  numpy uint8 ``data`` array reconstructed through ``numpy.core.multiarray._reconstruct``, and the
  keys ``batch_label``, ``labels``/``fine_labels``(+``coarse_labels``), ``data``, ``filenames``;
  meta files with ``label_names`` / ``fine_label_names`` + ``coarse_label_names``. They load with
  ``encoding="latin1"`` (str keys, as torchvision reads them) or ``encoding="bytes"`` (b'data').
* :func:`make_malicious_pickle` writes a pickle whose *loading* would run ``os.system``. It is
  only ever written here, never loaded by the test suite except through the restricted unpickler.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType
from typing import Any

import numpy as np
from PIL import Image

#: The pure-Python pickler, whose per-type ``dispatch`` table can be extended (typed loosely).
_PurePickler: Any = pickle._Pickler


class _Py2Pickler(_PurePickler):
    """Pickles ``str`` and ``bytes`` as Python 2 ``str`` and numpy globals under ``numpy.core``,
    reproducing the byte layout of pickles written by Python 2 (as the CIFAR archives are)."""

    dispatch = _PurePickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or "__main__"
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core") :]
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str
    dispatch[FunctionType] = save_global


def dump_py2(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` as a Python 2 protocol-2 pickle."""
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def make_imagefolder(
    root: Path, classes: int = 3, per_class: int = 4, size: int = 40, seed: int = 0
) -> Path:
    """Write ``root/train/class_<c>/`` and ``root/val/class_<c>/`` with ``per_class`` images each.

    Images are ``size`` × ``1.5·size`` (landscape), alternately PNG and JPEG, filled with a
    class-specific colour plus noise. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([(70 * c) % 256, 255 - (50 * c) % 256, 128], dtype=np.int64)
            for j in range(per_class):
                noise = rng.integers(-20, 21, size=(size, size + size // 2, 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                ext = "png" if j % 2 == 0 else "jpg"
                Image.fromarray(pixels).save(folder / f"img_{j}.{ext}")
    return root


@dataclass
class CifarFixture:
    """What a CIFAR fixture holds: the folder and the arrays written to it."""

    folder: Path
    label_names: list[str]
    train_data: np.ndarray  # (N, 3072) uint8
    train_labels: list[int]
    test_data: np.ndarray
    test_labels: list[int]
    files: list[Path] = field(default_factory=list)


def _random_batch(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, list[int]]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, size=n)]
    return data, labels


def make_cifar10(
    root: Path, n_train_per_batch: int = 6, n_test: int = 6, seed: int = 0
) -> CifarFixture:
    """Write ``root/cifar-10-batches-py/`` with 5 train batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    dump_py2(
        {"num_cases_per_batch": n_train_per_batch, "label_names": names, "num_vis": 3072},
        folder / "batches.meta",
    )
    datas, labels, files = [], [], [folder / "batches.meta"]
    for b in range(1, 6):
        data, batch_labels = _random_batch(rng, n_train_per_batch, len(names))
        batch = {
            "batch_label": f"training batch {b} of 5",
            "labels": batch_labels,
            "data": data,
            "filenames": [f"train_{b}_{i}.png" for i in range(n_train_per_batch)],
        }
        dump_py2(batch, folder / f"data_batch_{b}")
        files.append(folder / f"data_batch_{b}")
        datas.append(data)
        labels.extend(batch_labels)
    test_data, test_labels = _random_batch(rng, n_test, len(names))
    test = {
        "batch_label": "testing batch 1 of 1",
        "labels": test_labels,
        "data": test_data,
        "filenames": [f"test_{i}.png" for i in range(n_test)],
    }
    dump_py2(test, folder / "test_batch")
    files.append(folder / "test_batch")
    return CifarFixture(folder, names, np.concatenate(datas), labels, test_data, test_labels, files)


def make_cifar100(root: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> CifarFixture:
    """Write ``root/cifar-100-python/`` with ``train``, ``test`` and ``meta``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine = [f"fine_{i:02d}" for i in range(100)]
    coarse = [f"coarse_{i:02d}" for i in range(20)]
    dump_py2({"fine_label_names": fine, "coarse_label_names": coarse}, folder / "meta")
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data, fine_labels = _random_batch(rng, n, len(fine))
        batch = {
            "filenames": [f"{split}_{i}.png" for i in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine_labels,
            "coarse_labels": [label // 5 for label in fine_labels],
            "data": data,
        }
        dump_py2(batch, folder / split)
        written[split] = (data, fine_labels)
    return CifarFixture(
        folder,
        fine,
        *written["train"],
        *written["test"],
        files=[folder / "meta", folder / "train", folder / "test"],
    )


class _SystemCall:
    """Pickles as a call of ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def make_malicious_pickle(path: Path, sentinel: Path) -> Path:
    """Write a CIFAR-looking pickle whose unpickling would run ``touch <sentinel>``.

    Only pickling happens here (``__reduce__`` is recorded, not called). Never load the result
    with plain ``pickle.load``.
    """
    payload = {
        "batch_label": "training batch 1 of 5",
        "labels": [0],
        "data": _SystemCall(f"touch {shlex.quote(str(sentinel))}"),
        "filenames": ["x.png"],
    }
    with path.open("wb") as f:
        pickle.dump(payload, f, protocol=2)
    return path


def _label_png(values: np.ndarray, path: Path, palette: bool = False) -> None:
    img = Image.fromarray(values.astype(np.uint8), mode="L")
    if palette:
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in ((37 * i) % 256, (91 * i) % 256, i)])
    img.save(path)


def make_ade20k(root: Path, n_train: int = 3, n_val: int = 2, seed: int = 0) -> Path:
    """Write ``root/ADEChallengeData2016`` with JPEG images and ``L``-mode label PNGs holding
    0 (other) and classes 1, 7 and 150 in quadrants. Returns ``root / ADEChallengeData2016``."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    for split, n, prefix in (("training", n_train, "ADE_train"), ("validation", n_val, "ADE_val")):
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            h, w = 40, 56
            label = np.zeros((h, w), dtype=np.uint8)
            label[: h // 2, : w // 2] = 1
            label[h // 2 :, w // 2 :] = 7
            label[: h // 2, w // 2 :] = 150
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            stem = f"{prefix}_{i + 1:08d}"
            Image.fromarray(pixels).save(base / "images" / split / f"{stem}.jpg")
            _label_png(label, base / "annotations" / split / f"{stem}.png")
    return base


def make_voc(root: Path, n_train: int = 3, n_val: int = 2, seed: int = 0) -> Path:
    """Write ``root/VOC2012`` with palette label PNGs (0 background, 15 person, 255 boundary)
    and the Segmentation split files. Returns ``root / VOC2012``."""
    rng = np.random.default_rng(seed)
    base = root / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    for split, n in (("train", n_train), ("val", n_val)):
        ids = [f"2007_{split}_{i:04d}" for i in range(n)]
        for image_id in ids:
            h, w = 48, 36
            label = np.zeros((h, w), dtype=np.uint8)
            label[10:30, 8:28] = 15
            label[10, 8:28] = 255
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "JPEGImages" / f"{image_id}.jpg")
            _label_png(label, base / "SegmentationClass" / f"{image_id}.png", palette=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def make_coco(root: Path, n_train: int = 3, n_val: int = 2, seed: int = 0) -> Path:
    """Write a COCO layout: ``annotations/instances_{train,val}2017.json`` and JPEGs, with
    one polygon object (category id 3), one compressed-RLE object (category id 7) and one crowd
    (uncompressed RLE) per image. Returns ``root``."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "car"}]
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            h, w = 30, 40
            name = f"{i + 1:012d}.jpg"
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name)
            images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
            square = [2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": 3, "iscrowd": 0,
                 "segmentation": [square], "area": 100.0, "bbox": [2.0, 2.0, 10.0, 10.0]}
            )  # fmt: skip
            m = np.zeros((h, w), dtype=np.uint8)
            m[15:25, 20:35] = 1
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": 7, "iscrowd": 0,
                 "segmentation": rle, "area": 150.0, "bbox": [20.0, 15.0, 15.0, 10.0]}
            )  # fmt: skip
            crowd = np.zeros((h, w), dtype=np.uint8)
            crowd[0:5, 30:40] = 1
            counts, last, run = [], 0, 0
            for v in crowd.flatten(order="F"):
                if v != last:
                    counts.append(run)
                    last, run = v, 0
                run += 1
            counts.append(run)
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": 7, "iscrowd": 1,
                 "segmentation": {"size": [h, w], "counts": [int(c) for c in counts]},
                 "area": 50.0, "bbox": [30.0, 0.0, 10.0, 5.0]}
            )  # fmt: skip
        doc = {"images": images, "annotations": anns, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root
