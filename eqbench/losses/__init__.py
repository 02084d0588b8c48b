"""Self-supervised losses, each citing its paper and tested against a reference value."""

from __future__ import annotations

from eqbench.losses.dino import (
    DINOLoss,
    IBOTPatchLoss,
    cross_entropy_pairs,
    dino_cross_entropy,
    masked_token_cross_entropy,
)
from eqbench.losses.dinov2 import DINOv2Loss
from eqbench.losses.distributed import distributed_world, gather_with_grad
from eqbench.losses.equivariant import SIELoss, augself_loss
from eqbench.losses.gtsa import (
    correspondence_weight,
    nearest_neighbour_pairs,
    patch_correspondence_loss,
    region_loss,
)
from eqbench.losses.koleo import KoLeoLoss
from eqbench.losses.mae import masked_patch_mse, patchify
from eqbench.losses.ntxent import NTXentLoss
from eqbench.losses.sinkhorn import sinkhorn_knopp
from eqbench.losses.vicreg import VICRegLoss, covariance_term, invariance_term, variance_term

__all__ = [
    "DINOLoss",
    "DINOv2Loss",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "NTXentLoss",
    "SIELoss",
    "VICRegLoss",
    "augself_loss",
    "correspondence_weight",
    "covariance_term",
    "cross_entropy_pairs",
    "dino_cross_entropy",
    "distributed_world",
    "gather_with_grad",
    "invariance_term",
    "masked_patch_mse",
    "masked_token_cross_entropy",
    "nearest_neighbour_pairs",
    "patch_correspondence_loss",
    "patchify",
    "region_loss",
    "sinkhorn_knopp",
    "variance_term",
]
