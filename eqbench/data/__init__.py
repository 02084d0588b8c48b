"""Image datasets. Importing this package registers the built-in and path-based datasets.

Each dataset registers with a one-line description of what it is and the layout ``PATH`` must
have (``@DATASETS.register(name, description=...)``), which ``eqbench ls datasets`` lists.
"""

from __future__ import annotations

from eqbench.data import (  # noqa: F401  (registers)
    ade20k,
    cifar,
    clips,
    coco,
    davis,
    depth,
    digits,
    figures,
    finegrained,
    imagefolder,
    imagenet,
    inaturalist,
    photos,
    pose,
    scenes,
    shapes,
    vip,
    voc,
)
from eqbench.data.base import DATASETS, DatasetSpec, ImageDataset, load_dataset, resize_square
from eqbench.data.dense import IGNORE_INDEX, SegmentationDataset
from eqbench.data.depth import DepthDataset
from eqbench.data.pose import PoseDataset
from eqbench.data.video import VideoDataset

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "DatasetSpec",
    "DepthDataset",
    "ImageDataset",
    "PoseDataset",
    "SegmentationDataset",
    "VideoDataset",
    "load_dataset",
    "resize_square",
]
