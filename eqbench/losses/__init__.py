"""Self-supervised losses, each citing its paper and tested against a reference value."""

from __future__ import annotations

from eqbench.losses.dino import DINOLoss, IBOTPatchLoss, dino_cross_entropy
from eqbench.losses.distributed import distributed_world, gather_with_grad
from eqbench.losses.equivariant import SIELoss, augself_loss
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
    "covariance_term",
    "dino_cross_entropy",
    "distributed_world",
    "gather_with_grad",
    "invariance_term",
    "masked_patch_mse",
    "patchify",
    "variance_term",
]
