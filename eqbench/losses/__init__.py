"""Self-supervised losses, each citing its paper and tested against a reference value."""

from __future__ import annotations

from eqbench.losses.dino import DINOLoss, IBOTPatchLoss, dino_cross_entropy
from eqbench.losses.distributed import distributed_world, gather_with_grad
from eqbench.losses.equivariant import SIELoss, augself_loss
from eqbench.losses.gtsa import (
    correspondence_weight,
    nearest_neighbour_pairs,
    patch_correspondence_loss,
    region_loss,
)
from eqbench.losses.mae import masked_patch_mse, patchify
from eqbench.losses.ntxent import NTXentLoss
from eqbench.losses.vicreg import VICRegLoss, covariance_term, invariance_term, variance_term

__all__ = [
    "DINOLoss",
    "IBOTPatchLoss",
    "NTXentLoss",
    "SIELoss",
    "VICRegLoss",
    "augself_loss",
    "correspondence_weight",
    "covariance_term",
    "dino_cross_entropy",
    "distributed_world",
    "gather_with_grad",
    "invariance_term",
    "masked_patch_mse",
    "nearest_neighbour_pairs",
    "patch_correspondence_loss",
    "patchify",
    "region_loss",
    "variance_term",
]
