"""The raw-pixel baseline: a downsampled image as the representation."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from eqbench.backbones.base import BACKBONES, Encoder, Features


class PixelEncoder(Encoder):
    """Images area-downsampled to ``grid × grid`` RGB; no learned parameters.

    Normalisation is the identity (mean 0, std 1): features are raw pixel values in [0, 1].

    Unlike the learned backbones, the global feature is wider than the patch tokens:
    ``cls`` is the whole flattened thumbnail ``(B, 3·grid²)`` (channel-major, as
    ``thumbnail.flatten(1)``) while each patch token is one RGB cell ``(B, grid², 3)``.

    Args:
        img_size: nominal input size, used only for :attr:`patch_size`.
        grid: side of the thumbnail in cells.

    Attributes:
        embed_dim: 3, the width of the patch tokens.
        global_dim: ``3 * grid**2``, the width of :attr:`Features.cls`.
    """

    def __init__(self, img_size: int = 224, grid: int = 16) -> None:
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        super().__init__(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.arch = "pixels"
        self.img_size = img_size
        self.grid = grid
        self.embed_dim = 3
        self.global_dim = 3 * grid * grid
        self.patch_size = max(1, img_size // grid)
        self.has_cls = True

    def forward_tokens(self, x: Tensor) -> Features:
        """Thumbnail features.

        Args:
            x: ``(B, 3, H, W)`` images.

        Returns:
            ``cls`` ``(B, 3·grid²)``, ``patch`` ``(B, grid², 3)`` and grid ``(grid, grid)``.
        """
        thumb = F.interpolate(x, size=(self.grid, self.grid), mode="area")
        return Features(
            cls=thumb.flatten(1),
            patch=thumb.flatten(2).transpose(1, 2),
            grid=(self.grid, self.grid),
        )

    def describe(self) -> dict[str, Any]:
        """``{"name": "pixels", "kwargs": {"img_size", "grid"}}``."""
        return {"name": self.arch, "kwargs": {"img_size": self.img_size, "grid": self.grid}}


@BACKBONES.register("pixels")
def pixels(img_size: int = 224, grid: int = 16) -> Encoder:
    """Raw-pixel baseline: ``grid × grid`` area-downsampled RGB (no parameters)."""
    return PixelEncoder(img_size=img_size, grid=grid)
