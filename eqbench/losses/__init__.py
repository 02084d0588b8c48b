"""Self-supervised losses, each citing its paper and tested against a reference value."""

from __future__ import annotations

from eqbench.losses.distributed import distributed_world, gather_with_grad
from eqbench.losses.ntxent import NTXentLoss
from eqbench.losses.vicreg import VICRegLoss, covariance_term, invariance_term, variance_term

__all__ = [
    "NTXentLoss",
    "VICRegLoss",
    "covariance_term",
    "distributed_world",
    "gather_with_grad",
    "invariance_term",
    "variance_term",
]
