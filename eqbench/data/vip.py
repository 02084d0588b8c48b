"""``vip:PATH``: VIP human part parsing videos (Zhou et al. 2018, "Adaptive Temporal Encoding
Network for Video Instance-level Human Parsing"), as label-propagation evaluations read them.

Layout (``PATH`` is the ``VIP_Fine`` folder, or a folder holding it or ``VIP/``)::

    Images/<video>/<frame>.jpg
    Annotations/Category_ids/<video>/<frame>.png   (part class per pixel, 0 background .. 19)
    lists/val_videos.txt, train_videos.txt          (one video per line; val is the test split)

This is what CropMAE's VIP evaluation reads (alexandre-eymael/CropMAE
``downstreams/propagation/vip_vallist.txt``: ``…/VIP/Images/<video> …/VIP/Annotations/
Category_ids/<video>`` per line; ``src/data/vos.py`` lines 96-114 pair the sorted frames with
the sorted annotations; ``src/eval/eval_vip.py`` lines 8-11 and 25-41 score 20 classes with the
ground truth of ``<gt_dir>/<video>/<frame>.png``). The frames are the annotated ones only (VIP
annotates one frame in 25), so each frame must have its annotation. A list line may name the
video alone (``videos338``) or, as CropMAE's list, the video's image folder: the last component
of the first field is taken. ``n`` keeps the first ``n`` videos. Nothing is decoded when the
dataset is opened: the layout is checked from file names, so bad input fails before any model
is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eqbench.data.base import DATASETS, check_root
from eqbench.data.dense import read_label_png
from eqbench.data.listed_videos import ListedVideos, pair_annotations
from eqbench.data.video import VideoDataset
from eqbench.errors import DatasetError

#: VIP's part classes (CropMAE ``src/eval/eval_vip.py`` lines 8-11).
PART_CLASSES = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks",
    "pants", "gloves", "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm",
    "right-leg", "left-leg", "right-shoe", "left-shoe",
)  # fmt: skip
SPLITS = {"train": "train", "test": "val"}
ANNOTATIONS = Path("Annotations") / "Category_ids"
_LAYOUT = (
    "Pass --dataset vip:PATH with PATH the VIP_Fine folder holding Images/<video>/*.jpg, "
    "Annotations/Category_ids/<video>/*.png and lists/{train,val}_videos.txt."
)

_DESCRIPTIONS = {
    "vip": (
        "VIP part parsing at PATH (VIP_Fine/): Images/<video>/*.jpg, "
        "Annotations/Category_ids/<video>/*.png (part class 0..19), "
        "lists/{train,val}_videos.txt; val is the test split; n = first n videos."
    )
}


def vip_root(root: Path) -> Path:
    """``root`` itself or its ``VIP_Fine`` or ``VIP`` child, whichever holds ``Images/``."""
    for candidate in (root, root / "VIP_Fine", root / "VIP"):
        if (candidate / "Images").is_dir():
            return candidate
    raise DatasetError(f"'{root}' holds no Images/ folder (nor VIP_Fine/Images/). {_LAYOUT}")


def vip_videos(root: Path, split: str) -> list[str]:
    """Video names listed in ``lists/<split>_videos.txt``, in order."""
    listing = root / "lists" / f"{SPLITS[split]}_videos.txt"
    if not listing.is_file():
        raise DatasetError(f"Missing video list '{listing}'. {_LAYOUT}")
    names = [
        Path(line.split()[0]).name for line in listing.read_text().splitlines() if line.strip()
    ]
    if not names:
        raise DatasetError(
            f"Video list '{listing}' names no video: the split is empty. List one video per "
            f"line. {_LAYOUT}"
        )
    return names


def _frame_order(path: Path) -> tuple[int, int | str]:
    """Numeric frame names in numeric order (CropMAE sorts by ``int(stem)``), others by name."""
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def vip_files(root: Path, video: str, listing: str) -> tuple[list[Path], list[Path]]:
    """The frames of a video and their annotations, in order, checked to pair up."""
    frame_dir = root / "Images" / video
    mask_dir = root / ANNOTATIONS / video
    frames = sorted(frame_dir.glob("*.jpg"), key=_frame_order) if frame_dir.is_dir() else []
    return pair_annotations(frames, frame_dir, mask_dir, video, "video", listing)


class VipVideos(ListedVideos):
    """Videos of a VIP split (see the module docstring); masks hold part classes 0..19.

    Args:
        root: the VIP_Fine folder.
        split: ``train`` or ``test`` (``lists/val_videos.txt``).
        n: keep the first ``n`` videos (all when ``None``).
    """

    version = 1
    part_classes = PART_CLASSES

    def __init__(self, root: Path, split: str, n: int | None) -> None:
        self.name = "vip"
        self.root = root
        self.split = split
        listing = f"lists/{SPLITS[split]}_videos.txt"
        names = vip_videos(root, split)
        self._keep(names, n, "video", lambda video: vip_files(root, video, listing))

    def mask(self, video: int, t: int) -> np.ndarray:
        mask = read_label_png(self.files[video][1][t])
        bad = (mask >= len(PART_CLASSES)) & (mask != 255)
        if bad.any():
            raise DatasetError(
                f"Annotation '{self.files[video][1][t]}' has value {int(mask[bad][0])}; VIP "
                f"part classes are 0..{len(PART_CLASSES) - 1} (255 void). Use the "
                "Category_ids annotations, not Human_ids or Instance_ids."
            )
        return mask

    def masks(self, video: int) -> np.ndarray:
        return np.stack(self._same_size_masks(video, "Use annotations of the frames' size."))


@DATASETS.register("vip", description=_DESCRIPTIONS["vip"])
def vip(path: str | None, split: str, n: int | None, seed: int) -> VideoDataset:
    """Factory of ``vip:PATH`` (``seed`` is unused: subsets are the first ``n`` videos)."""
    if split not in SPLITS:
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    root = vip_root(check_root(path, "vip", _LAYOUT))
    return VipVideos(root, split, n)
