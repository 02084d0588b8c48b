"""Image datasets. Importing this package registers the built-in and path-based datasets.

``DESCRIPTIONS`` maps each registered name to a one-line description with its expected layout,
for ``eqbench ls datasets``.
"""

from __future__ import annotations

from eqbench.data import (
    ade20k,
    cifar,
    clips,
    coco,
    davis,
    depth,
    digits,
    imagefolder,
    inat,
    photos,
    scenes,
    shapes,
    voc,
)
from eqbench.data.base import DATASETS, DatasetSpec, ImageDataset, load_dataset, resize_square
from eqbench.data.dense import IGNORE_INDEX, SegmentationDataset
from eqbench.data.depth import DepthDataset
from eqbench.data.video import VideoDataset

#: One line per dataset: what it is and the layout ``PATH`` must have.
DESCRIPTIONS: dict[str, str] = {
    **photos.DESCRIPTIONS,
    **digits.DESCRIPTIONS,
    **imagefolder.DESCRIPTIONS,
    **inat.DESCRIPTIONS,
    **cifar.DESCRIPTIONS,
    **shapes.DESCRIPTIONS,
    **ade20k.DESCRIPTIONS,
    **voc.DESCRIPTIONS,
    **coco.DESCRIPTIONS,
    **clips.DESCRIPTIONS,
    **davis.DESCRIPTIONS,
    **scenes.DESCRIPTIONS,
    **depth.DESCRIPTIONS,
}

__all__ = [
    "DATASETS",
    "DESCRIPTIONS",
    "IGNORE_INDEX",
    "DatasetSpec",
    "DepthDataset",
    "ImageDataset",
    "SegmentationDataset",
    "VideoDataset",
    "load_dataset",
    "resize_square",
]
