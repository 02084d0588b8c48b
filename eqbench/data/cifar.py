"""``cifar10:PATH`` and ``cifar100:PATH``: the Python-pickle releases of CIFAR.

Layouts (PATH may be the extracted folder itself or its parent)::

    PATH/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   # cifar-10-python.tar.gz
    PATH/cifar-100-python/{train, test, meta}                              # cifar-100-python.tar.gz

The batches are Python pickles, read with :mod:`eqbench.data.safe_pickle` (never plain
``pickle.load``), so a file that names any global other than numpy's array reconstructors is
refused. Images are the ``data`` rows (``(N, 3072)`` uint8, channel-major) reshaped to
``(N, 3, 32, 32)``; :meth:`Cifar.load` resizes them to the requested size (bilinear,
antialiased). CIFAR-100 uses the 100 fine labels. ``groups`` is the index. ``n`` and ``seed``
are ignored: the dataset is fixed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbench.data import safe_pickle
from eqbench.data.base import DATASETS, ImageDataset, resize_square
from eqbench.errors import DatasetError

logger = logging.getLogger(__name__)

VERSION = 1
_REASON = "CIFAR batches hold only numpy arrays"


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR release keeps its files and which keys it uses."""

    name: str
    title: str
    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str

    def describe(self) -> str:
        files = ", ".join((*self.train_files, *self.test_files, self.meta_file))
        return f"PATH/{self.folder}/{{{files}}} (extracted {self.archive})"


CIFAR10 = CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
)
CIFAR100 = CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
)


def describe(layout: CifarLayout) -> str:
    """The ``eqbench ls datasets`` line of a CIFAR release."""
    return (
        f"{layout.title}, Python pickle release, 32×32 resized to the encoder size: "
        f"{layout.describe()}; PATH may also be that folder itself."
    )


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _read_pickle(path: Path) -> dict[str, Any]:
    """Unpickle a CIFAR file safely; ``bytes`` keys (Python 3 re-saves) become ``str``."""
    obj = safe_pickle.load(path, reason=_REASON, error=DatasetError, encoding="latin1")
    if not isinstance(obj, dict):
        raise DatasetError(
            f"'{path}' holds a {type(obj).__name__}, not a CIFAR dict. Replace it with the file "
            "from the official archive."
        )
    return {_text(k): v for k, v in obj.items()}


def resolve_folder(path: str, layout: CifarLayout) -> Path:
    """The folder holding ``layout``'s files: ``path`` itself or ``path/<layout.folder>``."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(
            f"{layout.title} folder '{root}' does not exist. Pass --dataset "
            f"{layout.name}:PATH with PATH holding {layout.describe()}."
        )
    for folder in (root, root / layout.folder):
        if (folder / layout.test_files[0]).is_file() or (folder / layout.meta_file).is_file():
            return folder
    raise DatasetError(
        f"No {layout.title} files in '{root}'. Expected {layout.describe()}; PATH may also be "
        f"the {layout.folder} folder itself. Download and extract {layout.archive} there."
    )


def read_split(folder: Path, layout: CifarLayout, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and int64 labels of ``split`` from ``folder``."""
    names = layout.train_files if split == "train" else layout.test_files
    datas, labels = [], []
    for name in names:
        file = folder / name
        if not file.is_file():
            raise DatasetError(
                f"{layout.title} file '{file}' is missing. Expected {layout.describe()}; "
                f"re-extract {layout.archive}."
            )
        batch = _read_pickle(file)
        data, batch_labels = batch.get("data"), batch.get(layout.label_key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
        ):
            raise DatasetError(
                f"'{file}' is not a {layout.title} batch: its 'data' entry is not an (N, 3072) "
                f"uint8 array. Replace it with the file from {layout.archive}."
            )
        if batch_labels is None or len(batch_labels) != data.shape[0]:
            raise DatasetError(
                f"'{file}' is not a {layout.title} batch: '{layout.label_key}' is missing or "
                f"does not match the {data.shape[0]} images. Replace it with the file from "
                f"{layout.archive}."
            )
        as_array = np.asarray(batch_labels)
        if as_array.ndim != 1 or not np.issubdtype(as_array.dtype, np.integer):
            raise DatasetError(
                f"'{file}' is not a {layout.title} batch: '{layout.label_key}' holds "
                f"{as_array.dtype} values, not integer class indices. Replace it with the file "
                f"from {layout.archive}."
            )
        datas.append(data)
        labels.append(as_array.astype(np.int64))
    images = np.concatenate(datas).reshape(-1, 3, 32, 32)
    return np.ascontiguousarray(images), np.concatenate(labels)


def read_classes(folder: Path, layout: CifarLayout) -> list[str]:
    """Class names from the meta file."""
    file = folder / layout.meta_file
    if not file.is_file():
        raise DatasetError(
            f"{layout.title} meta file '{file}' is missing. Expected {layout.describe()}; "
            f"re-extract {layout.archive}."
        )
    names = _read_pickle(file).get(layout.names_key)
    if not isinstance(names, list) or not names:
        raise DatasetError(
            f"'{file}' has no '{layout.names_key}' list. Replace it with the file from "
            f"{layout.archive}."
        )
    return [str(_text(n)) for n in names]


class Cifar(ImageDataset):
    """One split of CIFAR-10 or CIFAR-100 (see the module docstring).

    Args:
        folder: the extracted folder (``cifar-10-batches-py`` or ``cifar-100-python``).
        layout: :data:`CIFAR10` or :data:`CIFAR100`.
        split: ``train`` or ``test``.
    """

    def __init__(self, folder: Path, layout: CifarLayout, split: str) -> None:
        self.name = layout.name
        self.split = split
        self.folder = folder
        self.classes = read_classes(folder, layout)
        images, self.labels = read_split(folder, layout, split)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DatasetError(
                f"{layout.title} labels in '{folder}' fall outside the {len(self.classes)} "
                f"classes of {layout.meta_file}. Re-extract {layout.archive}."
            )
        self.groups = np.arange(len(self.labels), dtype=np.int64)
        self.images = torch.from_numpy(images)
        self._digest: str | None = None

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return resize_square(self.images[index], size)

    def content_hash(self) -> str:
        """SHA-256 (16 hex digits) of the split's pixels and labels, computed once."""
        if self._digest is None:
            h = hashlib.sha256(self.images.numpy().tobytes())
            h.update(self.labels.tobytes())
            self._digest = h.hexdigest()[:16]
        return self._digest

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.folder),
            "split": self.split,
            "n": len(self),
            "sha256": self.content_hash(),
            "version": VERSION,
        }


def _factory(layout: CifarLayout, path: str | None, split: str, n: int | None) -> Cifar:
    if not path:
        raise DatasetError(
            f"The {layout.name} dataset needs a path: --dataset {layout.name}:PATH with PATH "
            f"holding {layout.describe()}."
        )
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    if n is not None:
        logger.debug("%s is a fixed dataset; ignoring n=%s", layout.name, n)
    return Cifar(resolve_folder(path, layout), layout, split)


@DATASETS.register("cifar10", description=describe(CIFAR10))
def cifar10(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``cifar10:PATH`` (``n`` and ``seed`` ignored)."""
    return _factory(CIFAR10, path, split, n)


@DATASETS.register("cifar100", description=describe(CIFAR100))
def cifar100(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``cifar100:PATH`` (``n`` and ``seed`` ignored)."""
    return _factory(CIFAR100, path, split, n)
