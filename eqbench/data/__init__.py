"""Image datasets. Importing this package registers the built-in and path-based datasets.

``DESCRIPTIONS`` maps each registered name to a one-line description with its expected layout,
for ``eqbench ls datasets``.
"""

from __future__ import annotations

from eqbench.data import cifar, digits, imagefolder, photos
from eqbench.data.base import DATASETS, DatasetSpec, ImageDataset, load_dataset, resize_square

#: One line per dataset: what it is and the layout ``PATH`` must have.
DESCRIPTIONS: dict[str, str] = {
    **photos.DESCRIPTIONS,
    **digits.DESCRIPTIONS,
    **imagefolder.DESCRIPTIONS,
    **cifar.DESCRIPTIONS,
}

__all__ = [
    "DATASETS",
    "DESCRIPTIONS",
    "DatasetSpec",
    "ImageDataset",
    "load_dataset",
    "resize_square",
]
