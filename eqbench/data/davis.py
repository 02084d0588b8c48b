"""``davis:PATH``: DAVIS-2017 semi-supervised video object segmentation (Pont-Tuset et al. 2017).

Layout (``PATH`` is the ``DAVIS`` folder of the official archives, or a folder holding it)::

    JPEGImages/480p/<sequence>/00000.jpg, 00001.jpg, ...
    Annotations/480p/<sequence>/00000.png, ...   (palette PNG: palette index = object id)
    ImageSets/2017/train.txt, val.txt             (one sequence per line; val is the test split)

Annotation values are object ids (0 background, 255 void). Every frame must have its annotation,
as in the train and val sets: the protocol scores all frames but the first and last, like the
DAVIS toolkit (davisvideochallenge/davis2017-evaluation ``davis2017/davis.py``). ``n`` keeps the
first ``n`` sequences of the list file. Nothing is decoded when the dataset is opened: the layout
is checked from file names, so bad input fails before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eqbench.data.base import DATASETS, check_root
from eqbench.data.dense import read_label_png
from eqbench.data.listed_videos import ListedVideos, pair_annotations
from eqbench.data.video import VideoDataset
from eqbench.errors import DatasetError

SPLITS = {"train": "train", "test": "val"}
RESOLUTION = "480p"
_LAYOUT = (
    "Pass --dataset davis:PATH with PATH the DAVIS folder holding JPEGImages/480p/<sequence>/, "
    "Annotations/480p/<sequence>/ and ImageSets/2017/{train,val}.txt (the DAVIS-2017 "
    "TrainVal archive)."
)


def davis_root(root: Path) -> Path:
    """``root`` itself or its ``DAVIS`` child, whichever holds ``JPEGImages/``."""
    for candidate in (root, root / "DAVIS"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetError(f"'{root}' holds no JPEGImages/ folder (nor DAVIS/JPEGImages/). {_LAYOUT}")


def davis_sequences(root: Path, split: str) -> list[str]:
    """Sequence names listed in ``ImageSets/2017/<split>.txt``, in order."""
    listing = root / "ImageSets" / "2017" / f"{SPLITS[split]}.txt"
    if not listing.is_file():
        raise DatasetError(f"Missing sequence list '{listing}'. {_LAYOUT}")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(
            f"Sequence list '{listing}' names no sequence: the split is empty. List one "
            f"sequence per line. {_LAYOUT}"
        )
    return names


def davis_files(root: Path, sequence: str, listing: str) -> tuple[list[Path], list[Path]]:
    """The frames of a sequence and their annotations, sorted, checked to pair up."""
    frame_dir = root / "JPEGImages" / RESOLUTION / sequence
    mask_dir = root / "Annotations" / RESOLUTION / sequence
    frames = sorted(frame_dir.glob("*.jpg")) if frame_dir.is_dir() else []
    return pair_annotations(frames, frame_dir, mask_dir, sequence, "sequence", listing)


class DavisVideos(ListedVideos):
    """Sequences of a DAVIS-2017 split (see the module docstring).

    Args:
        root: the DAVIS folder.
        split: ``train`` or ``test`` (``val.txt``).
        n: keep the first ``n`` sequences (all when ``None``).
    """

    version = 1

    def __init__(self, root: Path, split: str, n: int | None) -> None:
        self.name = "davis"
        self.root = root
        self.split = split
        listing = f"ImageSets/2017/{SPLITS[split]}.txt"
        names = davis_sequences(root, split)
        self._keep(names, n, "sequence", lambda seq: davis_files(root, seq, listing))

    def mask(self, video: int, t: int) -> np.ndarray:
        return read_label_png(self.files[video][1][t])

    def masks(self, video: int) -> np.ndarray:
        masks = self._same_size_masks(video, "Replace them with the 480p annotations.")
        if int(masks[0][masks[0] != 255].max(initial=0)) == 0:
            raise DatasetError(
                f"The first annotation of '{self.videos[video]}' "
                f"('{self.files[video][1][0]}') marks no object, so there is nothing to "
                "propagate. Restore it or remove the sequence from the list."
            )
        return np.stack(masks)


@DATASETS.register(
    "davis",
    description=(
        "DAVIS-2017 at PATH (DAVIS/): JPEGImages/480p/<seq>/*.jpg, Annotations/480p/<seq>/*.png "
        "(palette index = object id), ImageSets/2017/{train,val}.txt; val is the test split; "
        "n = first n sequences."
    ),
)
def davis(path: str | None, split: str, n: int | None, seed: int) -> VideoDataset:
    """Factory of ``davis:PATH`` (``seed`` is unused: subsets are the first ``n`` sequences)."""
    if split not in SPLITS:
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    root = davis_root(check_root(path, "davis", _LAYOUT))
    return DavisVideos(root, split, n)
