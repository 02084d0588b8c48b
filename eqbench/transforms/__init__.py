"""Transformations: geometric (rotation, translation, SE(2), scale, four-fold rotation, flip) and
photometric (colour jitter, Gaussian blur). Importing this package registers them all."""

from __future__ import annotations

from eqbench.transforms import geometric, photometric  # noqa: F401  (registers)
from eqbench.transforms.base import TRANSFORMS, Transformation, build_transform

__all__ = ["TRANSFORMS", "Transformation", "build_transform"]
