"""Images with metric depth: the base class of ``depth_scenes``, ``nyu`` and ``kitti``.

A :class:`DepthDataset` is an :class:`~eqbench.data.base.ImageDataset` whose items also carry a
depth map: :meth:`DepthDataset.sample` returns the RGB image ``(H, W, 3)`` uint8 and the depth
``(H, W)`` float32 in metres (0 where there is no measurement) at the stored resolution. It names
the evaluation conventions of its benchmark: ``min_depth``, ``max_depth`` and the ``crop`` of
:mod:`eqbench.protocols.depth.metrics`.

Path layouts are those of the depth toolbox dinov2's depth evaluation uses
(zhyever/Monocular-Depth-Estimation-Toolbox, ``depth/datasets/nyu.py`` and ``kitti.py``; dinov2's
``dinov2_vitb14_nyu_linear_config.py``: ``data_root='data/nyu'``, ``split='nyu_train.txt'``,
``depth_scale=1000``, ``eigen_crop=True``, ``max_depth=10``):

``nyu:PATH`` (BTS's labelled NYU-v2 split, 24,231 train / 654 test)::

    nyu_train.txt, nyu_test.txt     (or BTS's nyudepthv2_{train,test}_files_with_gt.txt)
        one pair per line: "<rgb> <depth> <focal>", paths relative to PATH
        (a leading "/" is dropped), e.g. "/kitchen_0028b/rgb_00045.jpg
        /kitchen_0028b/sync_depth_00045.png 518.8579"
    <rgb>: colour image; <depth>: 16-bit PNG of millimetres (metres = value / 1000)

``kitti:PATH`` (Eigen split)::

    kitti_eigen_train.txt, kitti_eigen_test.txt: "<rgb> <depth> <focal>" per line
    input/<rgb>        e.g. input/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
    gt_depth/<depth>   e.g. gt_depth/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/
                       0000000069.png; 16-bit PNG, metres = value / 256, 0 = no measurement

Lines whose depth is ``None`` are skipped (the toolbox's ``invalid_depth_num``). KITTI images and
depth maps are KB-cropped to 352×1216 (bottom, centred: the toolbox's ``eval_kb_crop``). Every
listed file is checked to exist when the dataset is opened, so bad input fails before a model is
loaded; ``n`` keeps a seeded subset.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from eqbench.data.base import DATASETS, ImageDataset, check_root, resize_square
from eqbench.data.dense import FilePairs, read_rgb
from eqbench.errors import DatasetError

#: KITTI's KB crop ``(height, width)``, bottom and centred (toolbox ``kitti.py``).
KB_CROP = (352, 1216)

NYU_LISTS = {
    "train": ("nyu_train.txt", "nyudepthv2_train_files_with_gt.txt"),
    "test": ("nyu_test.txt", "nyudepthv2_test_files_with_gt.txt"),
}
KITTI_LISTS = {"train": "kitti_eigen_train.txt", "test": "kitti_eigen_test.txt"}

_NYU_LAYOUT = (
    "Pass --dataset nyu:PATH with PATH holding nyu_train.txt and nyu_test.txt (BTS's split "
    "files: '<rgb> <depth> <focal>' per line, paths relative to PATH) and the files they list "
    "(depth as 16-bit PNG in millimetres)."
)
_KITTI_LAYOUT = (
    "Pass --dataset kitti:PATH with PATH holding kitti_eigen_train.txt, kitti_eigen_test.txt "
    "('<rgb> <depth> <focal>' per line), input/<rgb> and gt_depth/<depth> (16-bit PNG, "
    "metres = value / 256)."
)


class DepthDataset(ImageDataset):
    """A split whose images come with metric depth maps.

    Attributes:
        min_depth / max_depth: ground truth outside ``(min_depth, max_depth)`` is not scored
            (and not trained on).
        crop: the evaluation crop (``eigen``, ``garg`` or ``none``).
    """

    min_depth: float
    max_depth: float
    crop: str

    @abstractmethod
    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(H, W, 3)`` uint8 and depth ``(H, W)`` float32 metres (0: no measurement)."""

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        """Images by index, each resized to ``size × size`` (the image interface)."""
        out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        for row, i in enumerate(indices):
            image = self.sample(int(i))[0]
            out[row] = resize_square(torch.from_numpy(image).permute(2, 0, 1)[None], size)[0]
        return out


def read_depth_png(path: Path, scale: float) -> np.ndarray:
    """A 16-bit depth PNG divided by ``scale`` (1000 for NYU's mm, 256 for KITTI), float32."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("I", "I;16", "I;16B", "L"):
                raise ValueError(f"mode {img.mode} is not a single-channel depth map")
            raw = np.asarray(img, dtype=np.float32)
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ...
        raise DatasetError(
            f"Cannot read depth map '{path}' ({type(exc).__name__}: {exc}). Depth maps are "
            "single-channel 16-bit PNGs: replace or delete the pair."
        ) from exc
    return raw / np.float32(scale)


def split_pairs(
    listing: Path, rgb_root: Path, depth_root: Path, layout: str
) -> list[tuple[Path, Path]]:
    """``(rgb, depth)`` of every line of a split file ``'<rgb> <depth> [focal]'``.

    Paths are relative to ``rgb_root`` and ``depth_root`` (a leading ``/`` is dropped, as the
    toolbox's ``remove_leading_slash``); lines whose depth is ``None`` are skipped; every file
    must exist.
    """
    pairs: list[tuple[Path, Path]] = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DatasetError(
                f"Line {number} of '{listing}' has no depth map ('{line.strip()}'); each line "
                f"is '<rgb> <depth> <focal>'. {layout}"
            )
        if fields[1] == "None":
            continue
        rgb = rgb_root / fields[0].lstrip("/\\")
        depth = depth_root / fields[1].lstrip("/\\")
        for path in (rgb, depth):
            if not path.is_file():
                raise DatasetError(
                    f"'{listing.name}' line {number} names '{path}', which does not exist. "
                    "Restore the file or remove the line."
                )
        pairs.append((rgb, depth))
    if not pairs:
        raise DatasetError(
            f"Split file '{listing}' lists no image with a depth map: the split is empty. {layout}"
        )
    return pairs


class DepthFiles(FilePairs, DepthDataset):
    """A split given as ``(rgb, depth PNG)`` pairs (the NYU and KITTI layouts).

    Args:
        name: registry name.
        root: dataset root (for the fingerprint).
        split: ``train`` or ``test``.
        pairs: ``(rgb, depth)`` paths, in the split file's order.
        depth_scale: PNG value per metre.
        min_depth / max_depth / crop: evaluation conventions.
        kb_crop: crop images and depth maps to KITTI's 352×1216 (bottom, centred).
        n / seed: keep a seeded subset of ``n`` pairs.
    """

    version = 1

    def __init__(
        self,
        name: str,
        root: Path,
        split: str,
        pairs: list[tuple[Path, Path]],
        depth_scale: float,
        min_depth: float,
        max_depth: float,
        crop: str,
        kb_crop: bool,
        n: int | None,
        seed: int,
    ) -> None:
        self.name, self.root, self.split = name, root, split
        self.depth_scale, self.kb_crop = depth_scale, kb_crop
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        self._keep_pairs(pairs, lambda image: str(image.relative_to(root)), n, seed)
        self.classes = ["depth"]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rgb_path, depth_path = self.pairs[index]
        image, depth = read_rgb(rgb_path), read_depth_png(depth_path, self.depth_scale)
        if image.shape[:2] != depth.shape:
            raise DatasetError(
                f"Image '{rgb_path}' is {image.shape[1]}x{image.shape[0]} but its depth map "
                f"'{depth_path}' is {depth.shape[1]}x{depth.shape[0]}. Replace the pair."
            )
        if self.kb_crop:
            image, depth = kb_crop(image), kb_crop(depth)
        return image, depth


def kb_crop(array: np.ndarray) -> np.ndarray:
    """KITTI's KB crop: the bottom 352 rows and the centred 1216 columns (toolbox
    ``eval_kb_crop``); smaller arrays are kept whole along that axis."""
    height, width = array.shape[:2]
    crop_h, crop_w = min(KB_CROP[0], height), min(KB_CROP[1], width)
    top, left = height - crop_h, (width - crop_w) // 2
    return array[top : top + crop_h, left : left + crop_w]


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")


@DATASETS.register(
    "nyu",
    description=(
        "NYU Depth v2, BTS's labelled split at PATH: nyu_{train,test}.txt listing "
        "'<rgb> <depth> <focal>' relative to PATH; depth 16-bit PNG in mm; eigen crop, 10 m cap; "
        "n = seeded subset."
    ),
)
def nyu(path: str | None, split: str, n: int | None, seed: int) -> DepthDataset:
    """Factory of ``nyu:PATH`` (BTS's labelled NYU-v2 split, see the module docstring)."""
    _check_split(split)
    root = check_root(path, "nyu", _NYU_LAYOUT)
    listing = next((root / f for f in NYU_LISTS[split] if (root / f).is_file()), None)
    if listing is None:
        raise DatasetError(f"Missing split file '{root / NYU_LISTS[split][0]}'. {_NYU_LAYOUT}")
    pairs = split_pairs(listing, root, root, _NYU_LAYOUT)
    return DepthFiles("nyu", root, split, pairs, 1000.0, 1e-3, 10.0, "eigen", False, n, seed)


@DATASETS.register(
    "kitti",
    description=(
        "KITTI Eigen split at PATH: kitti_eigen_{train,test}.txt listing '<rgb> <depth> <focal>', "
        "input/<rgb>, gt_depth/<depth> (16-bit PNG, /256 = m); KB crop, Garg crop, 80 m cap; "
        "n = seeded subset."
    ),
)
def kitti(path: str | None, split: str, n: int | None, seed: int) -> DepthDataset:
    """Factory of ``kitti:PATH`` (the Eigen split, see the module docstring)."""
    _check_split(split)
    root = check_root(path, "kitti", _KITTI_LAYOUT)
    listing = root / KITTI_LISTS[split]
    if not listing.is_file():
        raise DatasetError(f"Missing split file '{listing}'. {_KITTI_LAYOUT}")
    pairs = split_pairs(listing, root / "input", root / "gt_depth", _KITTI_LAYOUT)
    return DepthFiles("kitti", root, split, pairs, 256.0, 1e-3, 80.0, "garg", True, n, seed)
