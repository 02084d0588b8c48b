"""One feature API for every backbone.

An :class:`Encoder` takes float images in [0, 1], shape ``(B, 3, H, W)``, applies its own input
normalisation, and returns :class:`Features`: the global feature (CLS token, or pooled for models
without one) and the patch tokens ``(B, N, D)`` with their grid size.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.errors import ConfigError
from eqbench.registry import Registry

FeatureKind = Literal["cls", "avgpool", "cls+avgpool", "grid"]
FEATURE_KINDS: tuple[str, ...] = ("cls", "avgpool", "cls+avgpool", "grid")
#: ``k`` of the ``grid`` feature: the patch-token map average-pooled to ``k × k`` cells.
GRID_SIZE = 2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Features:
    """Output of :meth:`Encoder.forward`.

    Attributes:
        cls: ``(B, D)`` CLS token, or ``None`` for models without one.
        patch: ``(B, N, D)`` patch tokens (spatial feature-map cells for CNNs), row-major.
        grid: ``(h, w)`` with ``h * w == N``.
    """

    cls: Tensor | None
    patch: Tensor
    grid: tuple[int, int]

    def pooled(self, kind: FeatureKind | str = "cls") -> Tensor:
        """The global feature ``(B, D')``: ``cls`` (mean patch token if there is no CLS),
        ``avgpool`` (mean patch token), ``cls+avgpool`` (both, concatenated) or ``grid`` (the
        patch-token map average-pooled to ``GRID_SIZE × GRID_SIZE`` cells and flattened
        channel-major, ``(B, D·k²)``: a mean over all positions cancels what a rotation moves
        between positions, a coarse grid keeps where it went)."""
        if kind == "grid":
            return self.grid_pooled(GRID_SIZE)
        mean = self.patch.mean(dim=1)
        if kind == "avgpool":
            return mean
        cls = self.cls if self.cls is not None else mean
        if kind == "cls":
            return cls
        if kind == "cls+avgpool":
            return torch.cat([cls, mean], dim=-1)
        raise ValueError(f"unknown feature kind {kind!r}; use one of {FEATURE_KINDS}")

    def patch_map(self) -> Tensor:
        """The patch tokens ``(B, N, D)`` as a feature map ``(B, D, h, w)``."""
        h, w = self.grid
        batch, _, dim = self.patch.shape
        return self.patch.transpose(1, 2).reshape(batch, dim, h, w)

    def grid_pooled(self, k: int) -> Tensor:
        """Patch tokens as a map ``(B, D, h, w)``, average-pooled to ``(B, D, k, k)`` (PyTorch's
        adaptive bins), flattened to ``(B, D·k²)``."""
        grid_map = self.patch_map()
        return F.adaptive_avg_pool2d(grid_map.float(), k).flatten(1).to(self.patch.dtype)


class Encoder(nn.Module):
    """Base class of every backbone wrapper.

    Attributes:
        arch: backbone name as registered (or the timm name).
        embed_dim: width ``D`` of the patch tokens and of the CLS token.
        patch_size: stride of the patch grid in pixels.
        has_cls: whether :attr:`Features.cls` is a real CLS token.
    """

    arch: str
    embed_dim: int
    patch_size: int
    has_cls: bool

    def __init__(
        self,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """``(images - mean) / std`` with the encoder's preprocessing constants."""
        mean: Tensor = self.mean  # type: ignore[assignment]
        std: Tensor = self.std  # type: ignore[assignment]
        return (images - mean.to(images.dtype)) / std.to(images.dtype)

    @abstractmethod
    def forward_tokens(self, x: Tensor) -> Features:
        """Features of *normalised* images ``x``."""

    def forward(self, images: Tensor) -> Features:
        """Features of images in [0, 1], ``(B, 3, H, W)``."""
        return self.forward_tokens(self.normalize(images))

    def forward_masked(self, images: Tensor, mask: Tensor, mask_token: Tensor) -> Features:
        """Features of images in [0, 1] whose masked patch embeddings are replaced by
        ``mask_token`` before the position embedding (iBOT, arXiv 2111.07832, section 3.2).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            mask: ``(B, N)`` bool, ``True`` for the patch tokens to mask (row-major grid).
            mask_token: ``(D,)`` learnable embedding.

        Raises:
            ConfigError: the backbone has no patch tokens to mask (only ViTs have).
        """
        raise ConfigError(
            f"Backbone '{self.arch}' cannot mask patch tokens (iBOT needs a ViT). Use a ViT "
            "backbone such as vit_small_patch16 or micro_vit."
        )

    def forward_visible(self, images: Tensor, keep: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Encode only the kept patch tokens (MAE, arXiv 2111.06377, section 3).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            keep: ``(B, n_keep)`` long indices of the patch tokens to keep (row-major grid).

        Returns:
            ``(tokens, grid)``: ``(B, prefix + n_keep, D)`` after the final norm, prefix (CLS,
            register) tokens first, then the kept tokens in the order of ``keep``; and the full
            patch grid ``(h, w)``.

        Raises:
            ConfigError: the backbone has no patch tokens to drop (only ViTs have).
        """
        raise ConfigError(
            f"Backbone '{self.arch}' cannot drop patch tokens (MAE needs a ViT). Use a ViT "
            "backbone such as vit_tiny_patch16 or micro_vit."
        )

    def forward_layers(self, images: Tensor, n: int, last: bool = False) -> list[Features]:
        """Features of ``n`` blocks, the last one included, each after the final norm, for
        images in [0, 1] ``(B, 3, H, W)``: ``n`` evenly spaced blocks (dinov2's "lin. 4" depth
        and segmentation heads read blocks 3, 6, 9 and 12 of a 12-block ViT), or with ``last``
        the ``n`` last blocks (dinov2's linear classifier, ``get_intermediate_layers(x, n)``).
        ``n = 1`` is :meth:`forward`.

        Raises:
            ConfigError: ``n`` exceeds :meth:`block_count`.
        """
        if n == 1:
            return [self(images)]
        raise ConfigError(
            f"Backbone '{self.arch}' cannot return intermediate layers (layers={n} needs a "
            "timm ViT). Use layers=1."
        )

    def block_count(self) -> int:
        """How many blocks :meth:`forward_layers` can read (1: only the final output)."""
        return 1

    def describe(self) -> dict[str, Any]:
        """Backbone name and kwargs that rebuild this encoder (stored in checkpoints)."""
        return {"name": self.arch, "kwargs": {}}


#: ``name -> factory(img_size=..., **kwargs) -> Encoder``.
BACKBONES: Registry[Callable[..., Encoder]] = Registry("backbone", "eqbench ls backbones")
