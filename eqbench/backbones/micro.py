"""``micro_vit``: a tiny timm VisionTransformer for tests and smoke runs.

It goes through the same :class:`~eqbench.backbones.timm_encoder.TimmEncoder` path as the real
ViTs (timm's ``VisionTransformer`` with small kwargs), so checkpoints of it rebuild from
:meth:`~eqbench.backbones.base.Encoder.describe` like any other backbone.
"""

from __future__ import annotations

from typing import Any

from eqbench.backbones.base import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, Encoder
from eqbench.backbones.timm_encoder import TimmEncoder

#: timm entry point whose ``VisionTransformer`` class the micro ViT is built from.
MICRO_VIT_BASE = "vit_tiny_patch16_224"


@BACKBONES.register("micro_vit")
def micro_vit(
    img_size: int = 224,
    patch_size: int = 16,
    embed_dim: int = 64,
    depth: int = 2,
    num_heads: int = 2,
    **kwargs: Any,
) -> Encoder:
    """A ViT with ``embed_dim=64``, ``depth=2``, ``num_heads=2`` (~0.1 M parameters).

    Args:
        img_size: input size the model is built for (any size works at run time).
        patch_size: patch side in pixels (8 or 16 are typical).
        embed_dim: token width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        **kwargs: further ``VisionTransformer`` options.

    Returns:
        A :class:`TimmEncoder` whose ``describe()`` names ``micro_vit`` with all of the above,
        normalising inputs with the ImageNet mean/std.
    """
    return TimmEncoder(
        MICRO_VIT_BASE,
        img_size=img_size,
        arch="micro_vit",
        mean=kwargs.pop("mean", IMAGENET_MEAN),
        std=kwargs.pop("std", IMAGENET_STD),
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        **kwargs,
    )
