"""Parametrised image transformations on batched tensors.

A :class:`Transformation` ``g`` samples a parameter vector θ per image, applies ``g_θ`` to a batch,
and can produce the *intermediate* state ``g_{sθ}`` for a fraction ``s`` in [0, 1] (``s = 0`` is the
identity, ``s = 1`` the full transformation). TIR (Wang et al., AAAI-26, arXiv 2503.18753) uses the
intermediate states ``g_{kθ/(K+1)}(u)`` as reconstruction targets; the synthetic probes regress θ.

Conventions (eqbench defaults, see ``method.md``):

* images are float tensors ``(B, 3, H, W)`` with values in [0, 1];
* parameters are float32 tensors ``(B, P)`` in natural units (degrees, pixels at the image size the
  transformation was built for, offsets of colour factors, blur σ in pixels);
* geometric transformations act about the image centre with zero fill; callers that must not leak
  fill pixels apply them to a larger *context* image and crop the centre afterwards
  (:meth:`Transformation.context_size` says how large).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from eqbench.registry import Registry

TRANSFORMS: Registry[type[Transformation]] = Registry("transformation", "eqbench ls transforms")


class Transformation(ABC):
    """Base class: a family of transformations ``g_θ``.

    Args:
        image_size: side of the (square) view the parameters refer to, in pixels. Pixel-valued
            ranges given "at 224 px" are scaled by ``image_size / 224``.
        **options: ranges overriding the defaults (e.g. ``degrees=[-45, 45]``).
    """

    name: ClassVar[str]
    #: Names of the columns of the parameter tensor.
    param_names: ClassVar[tuple[str, ...]]
    #: ``True`` for finite groups (four-fold rotation, flip): parameters are class indices.
    discrete: ClassVar[bool] = False

    def __init__(self, image_size: int, **options: Any) -> None:
        self.image_size = image_size

    @property
    def num_classes(self) -> int:
        """Number of classes of a discrete transformation (0 for continuous ones)."""
        return 0

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``n`` parameter vectors, shape ``(n, P)``, float32, on the CPU."""

    @abstractmethod
    def apply(self, images: Tensor, params: Tensor, fraction: float | Tensor = 1.0) -> Tensor:
        """Return ``g_{fraction·θ}(images)`` for per-image ``params`` ``(B, P)``.

        ``fraction`` is a scalar or a ``(B,)`` tensor in [0, 1]. Discrete transformations accept
        only 0 or 1.
        """

    def context_size(self, view_size: int) -> int:
        """Side of the context image whose centre ``view_size`` crop is free of fill pixels
        after any transformation in the configured range. Photometric ones need no margin."""
        return view_size

    def target(self, params: Tensor) -> Tensor:
        """What a probe regresses (or classifies) for ``params``; the parameters by default."""
        return params

    def __call__(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Sample parameters for the batch, apply them, return ``(transformed, params)``."""
        params = self.sample(images.shape[0], generator).to(images.device)
        return self.apply(images, params), params

    def config(self) -> dict[str, Any]:
        """The resolved options (ranges), for result provenance."""
        return {}


def build_transform(name: str, image_size: int, **options: Any) -> Transformation:
    """Create a registered transformation by name (did-you-mean on a typo)."""
    return TRANSFORMS.get(name)(image_size, **options)


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """``n`` samples of U[low, high), float32."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float32)
