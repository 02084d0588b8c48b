"""Input sizes a backbone accepts: timm ViTs need sides divisible by their patch size.

A timm ``PatchEmbed`` without ``dynamic_img_pad`` asserts that the input's height and width are
multiples of the patch size, so a patch-14 DINOv2 cannot read the 64 px images of the default
tasks. eqbench snaps such sizes to the nearest multiple (64 → 70 for patch 14) rather than padding
(``dynamic_img_pad`` would feed the model black borders it never saw) or cropping; the result
JSON records the size used (:func:`eqbench.protocols.run.fit_tasks`).
"""

from __future__ import annotations

from eqbench.backbones.base import Encoder
from eqbench.backbones.timm_encoder import TimmEncoder


def size_multiple(encoder: Encoder) -> int:
    """The number input sides must be a multiple of: the patch size of a timm ViT whose patch
    embedding does not pad, else 1 (CNNs and the pixel baseline take any size)."""
    if not isinstance(encoder, TimmEncoder) or not encoder.is_token_model:
        return 1
    if getattr(encoder.model.patch_embed, "dynamic_img_pad", False):
        return 1
    return max(1, encoder.patch_size)


def snap_size(size: int, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``size`` (ties round up; at least ``multiple``).

    >>> snap_size(64, 14), snap_size(224, 14), snap_size(63, 14)
    (70, 224, 70)
    """
    if multiple <= 1 or size % multiple == 0:
        return size
    low = (size // multiple) * multiple
    high = low + multiple
    return high if low == 0 or size - low >= high - size else low
