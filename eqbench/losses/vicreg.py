"""VICReg: variance–invariance–covariance regularisation.

Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, arXiv 2105.04906 (official code
``facebookresearch/vicreg``, ``main_vicreg.py``). For embeddings ``z_a``, ``z_b`` ``(B, D)``:

* invariance ``s = MSE(z_a, z_b)`` (mean over batch and channels);
* variance ``v = ½·[mean_j relu(1 − std_j(z_a)) + mean_j relu(1 − std_j(z_b))]`` with
  ``std_j = sqrt(Var_j + ε)``, ``ε = 1e-4``, unbiased variance over the batch;
* covariance ``c = Σ_{i≠j} C(z_a)_{ij}² / D + Σ_{i≠j} C(z_b)_{ij}² / D`` with
  ``C = (z − z̄)ᵀ(z − z̄) / (B − 1)``;
* ``loss = λ·s + μ·v + ν·c`` with the paper's ``λ = μ = 25``, ``ν = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.errors import EqbenchError
from eqbench.losses.distributed import gather_with_grad


def invariance_term(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Mean squared difference of ``z_a`` and ``z_b``, both ``(B, D)``."""
    return F.mse_loss(z_a, z_b)


def variance_term(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Hinge ``mean_j relu(1 − sqrt(Var_j(z) + eps))`` over channels of ``z`` ``(B, D)``."""
    std = torch.sqrt(z.var(dim=0) + eps)  # (D,)
    return F.relu(1.0 - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal entries of the covariance of ``z`` ``(B, D)``, divided by D."""
    batch, dim = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (batch - 1)  # (D, D)
    off_diagonal = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
    return off_diagonal / dim


def variance_covariance(z_a: Tensor, z_b: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """VICReg's variance ``½·[v(z_a) + v(z_b)]`` and covariance ``c(z_a) + c(z_b)`` of two
    ``(B, D)`` embeddings (``v`` is :func:`variance_term`, ``c`` :func:`covariance_term`)."""
    variance = 0.5 * (variance_term(z_a, eps) + variance_term(z_b, eps))
    covariance = covariance_term(z_a) + covariance_term(z_b)
    return variance, covariance


class VICRegLoss(nn.Module):
    """The VICReg loss of Bardes et al. (arXiv 2105.04906), with its three terms for logging.

    Args:
        inv_weight: ``λ``, weight of the invariance term (paper: 25).
        var_weight: ``μ``, weight of the variance term (paper: 25).
        cov_weight: ``ν``, weight of the covariance term (paper: 1).
        eps: added to the variance before the square root (paper: 1e-4).
        gather_distributed: compute the variance and covariance terms on the embeddings of all
            processes (as the official code does); the invariance term stays per process.
    """

    def __init__(
        self,
        inv_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.inv_weight = inv_weight
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.eps = eps
        self.gather_distributed = gather_distributed

    def terms(self, z_a: Tensor, z_b: Tensor) -> dict[str, Tensor]:
        """The unweighted terms ``{"invariance", "variance", "covariance"}`` (scalars).

        Args:
            z_a: ``(B, D)`` embeddings of the first views.
            z_b: ``(B, D)`` embeddings of the second views.

        Raises:
            EqbenchError: shapes differ, are not 2-D, or the batch has fewer than 2 images.
        """
        if z_a.ndim != 2 or z_a.shape != z_b.shape:
            raise EqbenchError(
                f"VICReg needs two (B, D) embeddings of the same shape, got {tuple(z_a.shape)} "
                f"and {tuple(z_b.shape)}."
            )
        invariance = invariance_term(z_a, z_b)
        if self.gather_distributed:
            z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)  # (W·B, D)
        if z_a.shape[0] < 2:
            raise EqbenchError("VICReg's variance needs a batch of at least 2; raise batch_size.")
        variance, covariance = variance_covariance(z_a, z_b, self.eps)
        return {"invariance": invariance, "variance": variance, "covariance": covariance}

    def weighted(self, terms: dict[str, Tensor]) -> Tensor:
        """``λ·invariance + μ·variance + ν·covariance`` of :meth:`terms`' output."""
        return (
            self.inv_weight * terms["invariance"]
            + self.var_weight * terms["variance"]
            + self.cov_weight * terms["covariance"]
        )

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """The VICReg loss (scalar) of ``z_a``, ``z_b`` ``(B, D)``."""
        return self.weighted(self.terms(z_a, z_b))
