"""``imagefolder:PATH``: images in ImageNet layout.

Layout::

    PATH/train/<class>/**/*.jpg   (or .jpeg .png .bmp .gif .tif .tiff .webp .ppm .pgm)
    PATH/val/<class>/**/*.jpg     (the test split; PATH/test/ is used when val/ is absent)

Classes are the sorted folder names under ``train/``; a test class folder unknown to ``train/`` is
an error, as is a class folder without images. Files with other extensions and hidden entries are
ignored. Images are decoded with PIL, converted to RGB, resized so the shorter side equals the
requested size (bilinear, antialiased) and centre-cropped to a square; pretraining with
``full_image`` loads them whole instead (:meth:`ImageFolder.load_whole`). ``groups`` is the index
(each file is its own source). ``n``, when given, keeps a seeded random subset of that many files
(in file order), which makes a full ImageNet usable for quick runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from eqbench.data.base import (
    DATASETS,
    ImageDataset,
    check_root,
    kept_subset,
    parallel_rows,
    resize_square,
)
from eqbench.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
#: 2: the fingerprint covers the files' sizes and times (:func:`files_digest`).
VERSION = 2

_LAYOUT = (
    "Pass --dataset imagefolder:PATH with PATH the ImageNet-layout root holding "
    "train/<class>/*.jpg and val/<class>/*.jpg (or test/<class>/*.jpg)."
)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_dirs(folder: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _image_files(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted paths relative to ``folder``.

    Symbolic links to folders are followed once: a folder already visited (a link loop, or two
    links to one folder) is skipped with a warning, so no image is counted twice and a loop
    cannot make the walk endless.
    """
    found = []
    visited: set[tuple[int, int]] = set()
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in visited:
            skipped.append(dirpath)
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for name in filenames:
            if _is_image(name):
                found.append(name if rel == "." else os.path.join(rel, name))
    if skipped:
        logger.warning(
            "%s: skipped %d folder(s) reached again through symbolic links (e.g. %s); each "
            "image is counted once",
            folder,
            len(skipped),
            skipped[0],
        )
    return sorted(found)


def files_digest(folder: Path, files: Sequence[str]) -> str:
    """A digest of the files' names, sizes, modification and change times.

    The feature cache and result fingerprints use it so that an image replaced under the same
    name is never served stale. Why metadata and not the bytes: hashing the bytes costs as much
    reading as decoding the images, which a cache hit exists to avoid (ImageNet is 140 GB);
    one ``stat`` per file costs a few seconds for ImageNet. Any write changes the
    modification time, and the change time (``st_ctime_ns``, which no program can set back)
    catches a copy that keeps the old modification time (``cp -p``, ``rsync -a``) or a file
    renamed over another.

    Raises:
        DatasetError: a file vanished since the folder was scanned.
    """
    digest = hashlib.sha256()
    for rel in files:
        try:
            st = os.stat(folder / rel)
        except OSError as exc:
            raise DatasetError(
                f"Image file '{folder / rel}' cannot be read ({exc.strerror}); the dataset "
                "changed while eqbench ran. Run again."
            ) from None
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _split_folder(root: Path, split: str) -> Path:
    if split == "train":
        folder = root / "train"
        if not folder.is_dir():
            raise DatasetError(f"Dataset folder '{root}' has no train/ folder. {_LAYOUT}")
        return folder
    for name in ("val", "test"):
        if (root / name).is_dir():
            return root / name
    raise DatasetError(
        f"Dataset folder '{root}' has neither val/ nor test/ for the test split. {_LAYOUT}"
    )


def read_image(path: Path, size: int) -> Tensor:
    """Decode ``path`` to RGB, resize the shorter side to ``size`` and centre-crop a square.

    Returns:
        A uint8 tensor ``(3, size, size)``.

    Raises:
        DatasetError: when the file cannot be decoded.
    """
    tensor = decode_image(path)
    if min(tensor.shape[-2:]) != size:
        tensor = TF.resize(tensor, size, antialias=True)
    return TF.center_crop(tensor, [size, size])


def decode_image(path: Path) -> Tensor:
    """``path`` decoded to a uint8 RGB tensor ``(3, H, W)``, or :class:`DatasetError`."""
    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DatasetError(
            f"Cannot read image file '{path}' ({type(exc).__name__}: {exc}). It is corrupt, "
            "truncated or not an image: replace or delete it."
        ) from exc
    return torch.from_numpy(rgb).permute(2, 0, 1)


def read_images(files: Sequence[Path], size: int) -> Tensor:
    """:func:`read_image` of each file, ``(N, 3, size, size)`` uint8, decoded side by side."""
    out = torch.empty((len(files), 3, size, size), dtype=torch.uint8)

    def fill(rows: range) -> None:  # decoding releases the GIL: files decode side by side
        for row in rows:
            out[row] = read_image(files[row], size)

    parallel_rows(fill, len(files))
    return out


def read_whole_images(files: Sequence[Path], size: int) -> tuple[Tensor, Tensor]:
    """Each file's image whole, resized to ``size × size``, and its width / height.

    Returns:
        ``(N, 3, size, size)`` uint8 images and ``(N,)`` float64 aspect ratios.
    """
    out = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    aspect = torch.empty(len(files), dtype=torch.float64)

    def fill(rows: range) -> None:
        for row in rows:
            image = decode_image(files[row])  # (3, H, W)
            aspect[row] = image.shape[2] / image.shape[1]
            out[row] = resize_square(image.unsqueeze(0), size)[0]

    parallel_rows(fill, len(files))
    return out, aspect


class ImageFolder(ImageDataset):
    """One split of an ImageNet-layout folder (see the module docstring).

    Args:
        root: the dataset root holding ``train/`` and ``val/`` (or ``test/``).
        split: ``train`` or ``test``.
        n: keep a seeded random subset of this many files; ``None`` keeps all.
        seed: seed of the subset.
    """

    def __init__(self, root: Path, split: str, n: int | None, seed: int) -> None:
        self.name = "imagefolder"
        self.split = split
        self.root = root
        self.seed = seed
        self.classes = _class_dirs(_split_folder(root, "train"))
        if not self.classes:
            raise DatasetError(
                f"'{root / 'train'}' holds no class folders. Put each class's images in "
                f"train/<class>/. {_LAYOUT}"
            )
        self.folder = _split_folder(root, split)
        files, labels = self._scan()
        self.total = len(files)
        self.paths_hash = hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
        keep, self.n = kept_subset(len(files), n, seed, split)
        self.files = [files[i] for i in keep]
        self.labels = np.asarray(labels, dtype=np.int64)[keep]
        self.groups = np.arange(len(self.files), dtype=np.int64)
        self._contents_digest: str | None = None

    def _scan(self) -> tuple[list[str], list[int]]:
        """Relative file paths and labels of the split, checking the layout."""
        class_index = {name: i for i, name in enumerate(self.classes)}
        files: list[str] = []
        labels: list[int] = []
        for name in _class_dirs(self.folder):
            if name not in class_index:
                raise DatasetError(
                    f"Class folder '{self.folder / name}' has no counterpart in "
                    f"'{self.root / 'train'}'; test classes must be train classes. Rename or "
                    "remove it."
                )
            found = _image_files(self.folder / name)
            if not found:
                raise DatasetError(
                    f"Class folder '{self.folder / name}' holds no images (extensions: "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Add images or remove the folder."
                )
            files.extend(os.path.join(name, f) for f in found)
            labels.extend([class_index[name]] * len(found))
        return files, labels

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        return read_images([self.folder / self.files[i] for i in indices], size)

    def load_whole(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Each image whole, resized to ``size × size``, and its width / height."""
        return read_whole_images([self.folder / self.files[i] for i in indices], size)

    def contents_digest(self) -> str:
        """:func:`files_digest` of the files kept, computed once per opened split."""
        if self._contents_digest is None:
            self._contents_digest = files_digest(self.folder, self.files)
        return self._contents_digest

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            "folder": self.folder.name,
            "files": self.total,
            "paths_sha256": self.paths_hash,
            "contents_digest": self.contents_digest(),
            "n": self.n,
            "seed": self.seed if self.n is not None else None,
            "version": VERSION,
        }


@DATASETS.register(
    "imagefolder",
    description=(
        "Images in ImageNet layout at PATH: PATH/train/<class>/*.{jpg,png,...} and "
        "PATH/val/<class>/* (or PATH/test/); classes = train/ folder names; n = seeded subset."
    ),
)
def imagefolder(path: str | None, split: str, n: int | None, seed: int) -> ImageDataset:
    """Factory of ``imagefolder:PATH``."""
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    return ImageFolder(check_root(path, "imagefolder", _LAYOUT), split, n, seed)
