"""The DINO projection head and its weight-normalised last layer, shared by DINO and iBOT.

DINO (Caron et al., ICCV 2021, arXiv 2104.14294, appendix and ``vision_transformer.DINOHead``):
a 3-layer MLP (``Linear → GELU → Linear → GELU → Linear``) to a bottleneck, ℓ2 normalisation,
then a weight-normalised ``Linear`` without bias to ``K`` outputs whose norm is frozen at 1
(``norm_last_layer``). iBOT (Zhou et al., ICLR 2022, arXiv 2111.07832, ``iBOTHead``) applies the
same MLP to the patch tokens, with either the same last layer (``shared_head``) or its own.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.errors import ConfigError


class WeightNormLinear(nn.Module):
    """``x ↦ x Wᵀ`` with every row of ``W`` of norm ``g`` (``torch.nn.utils.weight_norm``).

    Args:
        in_dim: input width.
        out_dim: output width.
        learn_norm: learn the row norms ``g`` (start at 1); otherwise they stay 1.
    """

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach())
        self.norm = nn.Parameter(self.weight.new_ones(out_dim, 1)) if learn_norm else None

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim)`` → ``(..., out_dim)``."""
        weight = F.normalize(self.weight, dim=1)  # (out, in), unit rows
        if self.norm is not None:
            weight = weight * self.norm
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """MLP → ℓ2-normalised bottleneck → weight-normalised last layer.

    Args:
        in_dim: width of the features.
        out_dim: ``K`` (DINO: 65536; iBOT: 8192).
        hidden_dim: MLP hidden width (paper: 2048).
        bottleneck_dim: bottleneck width (paper: 256).
        norm_last_layer: freeze the last layer's row norms at 1 (DINO: true; iBOT ViT-S: false).
        patch_out_dim: iBOT: width of a separate patch last layer; ``None`` shares the last
            layer between the global and the patch outputs (iBOT's ``shared_head``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        patch_out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if min(in_dim, out_dim, hidden_dim, bottleneck_dim, patch_out_dim or 1) < 1:
            raise ConfigError("DINO head widths must be >= 1.")
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # DINO's _init_weights
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        learn = not norm_last_layer
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn)
        self.patch_last_layer = (
            WeightNormLinear(bottleneck_dim, patch_out_dim, learn) if patch_out_dim else None
        )

    def bottleneck(self, x: Tensor) -> Tensor:
        """``(..., in_dim)`` → unit vectors ``(..., bottleneck_dim)``."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Global outputs: ``(B, in_dim)`` → ``(B, out_dim)`` logits."""
        return self.last_layer(self.bottleneck(x))

    def forward_patch(self, tokens: Tensor) -> Tensor:
        """Patch outputs: ``(B, N, in_dim)`` → ``(B, N, K')`` logits (iBOT)."""
        last = self.patch_last_layer if self.patch_last_layer is not None else self.last_layer
        return last(self.bottleneck(tokens))
