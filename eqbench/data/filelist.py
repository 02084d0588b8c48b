"""Image datasets whose splits are lists of files with labels (the official split files).

FGVC-Aircraft, Oxford-IIIT Pet, Food-101, Flowers-102, iNaturalist and ImageNet each ship their
images beside split or annotation files that name the images of a split and their classes. Their
readers (:mod:`eqbench.data.finegrained`, :mod:`eqbench.data.inaturalist`,
:mod:`eqbench.data.imagenet`) parse those files into a :class:`FileList`, which decodes and
preprocesses images exactly as ``imagefolder`` does (:func:`~eqbench.data.imagefolder.read_image`:
PIL, RGB, shorter side resized to the requested size, centre crop) and keys the feature cache on
the same things: the file names, the labels, and :func:`~eqbench.data.imagefolder.files_digest`
(size, modification and change times) of the images and of the split files, so a replaced image
or an edited split file is never served stale.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from eqbench.data.base import ImageDataset, check_root, kept_subset
from eqbench.data.imagefolder import files_digest, read_images, read_whole_images
from eqbench.errors import DatasetError

#: 1: first version.
VERSION = 1

#: ``(files, labels, classes, sources)`` of a split, as the datasets' split readers return them.
Listing = tuple[list[str], list[int], list[str], list[str]]


class FileList(ImageDataset):
    """One split of a dataset given as image files (relative to ``folder``) and labels.

    Args:
        name: registry name.
        split: ``train`` or ``test``.
        root: the dataset root (what ``PATH`` resolved to), recorded in the fingerprint.
        folder: the folder the image paths are relative to.
        files: image paths relative to ``folder``, one per sample.
        labels: class index per sample, ``0 <= label < len(classes)``.
        classes: class names.
        sources: the split and annotation files the lists came from (relative to ``root``); their
            sizes and times enter the fingerprint.
        official_split: the official split(s) this split is made of, e.g. ``trainval``.
        n: keep a seeded random subset of this many samples; ``None`` keeps all.
        seed: seed of the subset.
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        root: Path,
        folder: Path,
        files: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        sources: Sequence[str],
        official_split: str,
        n: int | None,
        seed: int,
    ) -> None:
        self.name = name
        self.split = split
        self.root = root
        self.folder = folder
        self.classes = list(classes)
        self.sources = list(sources)
        self.official_split = official_split
        self.seed = seed
        all_labels = np.asarray(labels, dtype=np.int64)
        if len(all_labels) != len(files):
            raise ValueError(f"{len(files)} files but {len(all_labels)} labels")
        if len(all_labels) and (all_labels.min() < 0 or all_labels.max() >= len(self.classes)):
            raise DatasetError(
                f"{name} labels in '{root}' fall outside its {len(self.classes)} classes; the "
                f"split files {', '.join(self.sources)} do not match. Re-extract the dataset."
            )
        self.total = len(files)
        listing = hashlib.sha256()
        for file, label in zip(files, all_labels.tolist(), strict=True):
            listing.update(f"{file}\0{label}\n".encode())
        self.listing_hash = listing.hexdigest()[:16]
        keep, self.n = kept_subset(len(files), n, seed, split)
        self.files = [files[int(i)] for i in keep]
        self.labels = all_labels[keep]
        self.groups = np.arange(len(self.files), dtype=np.int64)
        self._contents_digest: str | None = None

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        return read_images([self.folder / self.files[i] for i in indices], size)

    def load_whole(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Each image whole, resized to ``size × size``, and its width / height."""
        return read_whole_images([self.folder / self.files[i] for i in indices], size)

    def contents_digest(self) -> str:
        """:func:`files_digest` of the images kept and of the split files, computed once."""
        if self._contents_digest is None:
            images = files_digest(self.folder, self.files)
            sources = files_digest(self.root, self.sources)
            self._contents_digest = hashlib.sha256(f"{images}{sources}".encode()).hexdigest()[:16]
        return self._contents_digest

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            "official_split": self.official_split,
            "files": self.total,
            "listing_sha256": self.listing_hash,
            "contents_digest": self.contents_digest(),
            "n": self.n,
            "seed": self.seed if self.n is not None else None,
            "version": VERSION,
        }


def listed_split(
    name: str,
    split: str,
    root: Path,
    listing: Listing,
    official_split: str,
    n: int | None,
    seed: int,
    *,
    check_files: bool = True,
) -> FileList:
    """The :class:`FileList` of ``split`` whose ``listing`` names images relative to ``root``.

    Args:
        name: registry name.
        split: ``train`` or ``test``.
        root: the dataset root, also the folder the listed files are relative to.
        listing: ``(files, labels, classes, sources)`` of the split.
        official_split: the official split(s) ``split`` is made of.
        n: keep a seeded random subset of this many samples; ``None`` keeps all.
        seed: seed of the subset.
        check_files: first refuse a listed image that does not exist
            (:func:`check_listed_files`); off where the files were found by walking folders.
    """
    files, labels, classes, sources = listing
    if check_files:
        check_listed_files(name, root, files, " / ".join(sources))
    return FileList(
        name=name,
        split=split,
        root=root,
        folder=root,
        files=files,
        labels=labels,
        classes=classes,
        sources=sources,
        official_split=official_split,
        n=n,
        seed=seed,
    )


def resolve_root(path: str | None, name: str, subfolder: str, marker: str, layout: str) -> Path:
    """The dataset folder: ``PATH`` itself when it holds ``marker``, else ``PATH/subfolder``
    (the folder torchvision's reader expects under its ``root``).

    Raises:
        DatasetError: no path, a missing folder, or no ``marker`` in either place; the message
            names the expected layout.
    """
    root = check_root(path, name, layout)
    for folder in (root, root / subfolder):
        if (folder / marker).exists():
            return folder
    raise DatasetError(
        f"No {name} dataset in '{root}': '{marker}' is missing (also looked in "
        f"'{root / subfolder}'). {layout}"
    )


def require(root: Path, rel: str, name: str, layout: str) -> Path:
    """``root / rel``, or :class:`DatasetError` naming the missing file and the layout."""
    file = root / rel
    if not file.exists():
        raise DatasetError(f"{name}: '{file}' is missing. {layout}")
    return file


def check_listed_files(name: str, folder: Path, files: Sequence[str], source: str) -> None:
    """Raise :class:`DatasetError` when an image named by ``source`` does not exist."""
    for rel in files:
        if not os.path.isfile(folder / rel):
            raise DatasetError(
                f"{name}: image '{folder / rel}' listed in {source} is missing. Extract the "
                "whole image archive (or fix the split file)."
            )
