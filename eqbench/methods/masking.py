"""Patch masks for iBOT's masked image modelling (Zhou et al., ICLR 2022, arXiv 2111.07832).

iBOT masks each global crop of the student with probability ``p`` (its ``pred_ratio [0, 0.3]``
choice: 0.5) and then a fraction ``r ~ U[ratio − var, ratio + var]`` (0.3 ± 0.2) of its patch
tokens. **eqbench default**: the masked tokens are drawn uniformly at random (iBOT's
``pred_shape="rand"``; its default is BEiT-style blocks, which degenerate on the few-token grids of
CPU runs), ``floor(r·N)`` tokens per masked image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_patch_masks(
    n_images: int,
    n_tokens: int,
    generator: torch.Generator,
    *,
    ratio: float = 0.3,
    ratio_var: float = 0.2,
    prob: float = 0.5,
) -> Tensor:
    """Random token masks, one row per image.

    Draws, in order: ``(n_images, 2)`` uniforms (masked or not, ratio), then
    ``(n_images, n_tokens)`` scores whose smallest ``floor(r·N)`` are masked.

    Args:
        n_images: ``B``.
        n_tokens: ``N``, patch tokens per image.
        generator: source of every random number.
        ratio: mean masked fraction of a masked image.
        ratio_var: half-width of the uniform range of the fraction.
        prob: probability that an image is masked at all.

    Returns:
        ``(B, N)`` bool, ``True`` where the token is masked.
    """
    draws = torch.rand(n_images, 2, generator=generator, dtype=torch.float64)
    fraction = (ratio - ratio_var + 2 * ratio_var * draws[:, 1]).clamp(0.0, 1.0)
    count = torch.floor(fraction * n_tokens) * (draws[:, 0] < prob)  # (B,)
    scores = torch.rand(n_images, n_tokens, generator=generator)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, N): position of each token in the order
    return rank < count.unsqueeze(1)
