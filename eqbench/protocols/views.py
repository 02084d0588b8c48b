"""Image views for the synthetic protocols, free of fill pixels.

Rotating or translating a crop with zero fill leaves black corners that give the parameter away
to any encoder. So each view is cut from a larger *context* image: the identity view ``I`` is the
centre ``view_size`` crop of the context, and the transformed view ``g_θ I`` is the centre crop of
the transformed context (``protocols.md``, "No fill leaks"). Both views share the same centre, so
the geometric transformations act about the view's centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from eqbench.data.base import ImageDataset, center_crop, unit_float
from eqbench.errors import ConfigError
from eqbench.features.store import BatchFn
from eqbench.transforms.base import Transformation


def context_size(view_size: int, ratio: float, transforms: Sequence[Transformation]) -> int:
    """Side of the context image, checked to be large enough for every transformation."""
    context = math.ceil(view_size * ratio)
    context += (context - view_size) % 2  # keep the margin symmetric
    for t in transforms:
        need = t.context_size(view_size)
        if need > context:
            raise ConfigError(
                f"context_ratio {ratio} gives a {context}px context, but '{t.name}' with its range "
                f"needs {need}px to keep fill pixels out of a {view_size}px view. Raise "
                "context_ratio or narrow the range."
            )
    return context


def view_batches(
    dataset: ImageDataset,
    view_size: int,
    context: int,
    transform: Transformation | None = None,
    params: Tensor | None = None,
) -> BatchFn:
    """A batch function producing (transformed) views in [0, 1] for the feature store."""

    def make(indices: Sequence[int]) -> Tensor:
        if transform is None or params is None:  # the centre alone: a quarter of the pixels
            return unit_float(dataset.load_window(indices, context, view_size))
        images = transform.apply(unit_float(dataset.load(indices, context)), params[list(indices)])
        return center_crop(images, view_size).clamp_(0.0, 1.0).contiguous()

    return make


def view_key(
    view_size: int, context: int, transform: Transformation | None, seed: int
) -> dict[str, Any]:
    """The cache-key description of :func:`view_batches` with these arguments."""
    what: dict[str, Any] = {"kind": "view", "view": view_size, "context": context}
    if transform is not None:
        what.update(transform=transform.name, options=transform.config(), seed=seed)
    return what
