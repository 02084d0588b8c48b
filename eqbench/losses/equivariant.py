"""Losses of the equivariant baselines: AugSelf's parameter-difference regression and SIE's
split invariant/equivariant VICReg-style loss (EquiMod reuses :class:`~eqbench.losses.NTXentLoss`,
E-SSL plain cross-entropy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.losses.distributed import gather_with_grad
from eqbench.losses.vicreg import invariance_term, variance_covariance, variance_term


def augself_loss(prediction: Tensor, target: Tensor, kind: str = "regression") -> Tensor:
    """One AugSelf term (Lee et al., NeurIPS 2021, arXiv 2111.09613, code ``SSObjective``).

    Args:
        prediction: ``(B, P)`` raw predictor outputs.
        target: ``(B, P)`` parameter differences ``ω₁ − ω₂`` (regression) or 0/1 labels
            (``binary``: 1 when the views are flipped alike).
        kind: ``regression`` — ``MSE(tanh(prediction), target)``, mean over all entries (the
            official code squashes the prediction with tanh); ``binary`` — BCE with logits.
    """
    if kind == "regression":
        return F.mse_loss(torch.tanh(prediction), target)
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(prediction, target)
    raise ValueError(f"unknown AugSelf loss kind {kind!r}; use regression or binary")


class SIELoss(nn.Module):
    """SIE's loss (Garrido, Najman and LeCun, ICML 2023, arXiv 2302.10283; code
    ``facebookresearch/SIE``, ``src/models.py`` class ``SIE``).

    For the projected invariant parts ``i₁, i₂``, equivariant parts ``e₁, e₂`` and the prediction
    ``ê₂ = ρ(t)·e₁``:

    * invariance ``MSE(i₁, i₂)``; equivariance ``MSE(ê₂, e₂)``;
    * variance ``½[v(x) + v(y)]`` and covariance ``c(x) + c(y)`` (VICReg's terms) on the whole
      embeddings ``x = [i₁, e₁]``, ``y = [i₂, e₂]`` (so the parts are also decorrelated from
      each other), plus ``½·v(ê₂)`` on the prediction;
    * ``loss = s·inv + f·s·equi + μ·(variance + pred_variance) + ν·covariance`` with the paper's
      ``s = 10``, ``f = 0.45`` (``--equi-factor``), ``μ = 10``, ``ν = 1``.

    Args:
        inv_weight: ``s``.
        equi_factor: ``f``, the equivariance weight relative to ``s``.
        var_weight: ``μ``.
        cov_weight: ``ν``.
        eps: variance epsilon (1e-4).
        gather_distributed: variance/covariance over all processes, as the official code.
    """

    def __init__(
        self,
        inv_weight: float = 10.0,
        equi_factor: float = 0.45,
        var_weight: float = 10.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.inv_weight = inv_weight
        self.equi_factor = equi_factor
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.eps = eps
        self.gather_distributed = gather_distributed

    def terms(
        self, inv1: Tensor, inv2: Tensor, equi1: Tensor, equi2: Tensor, pred2: Tensor
    ) -> dict[str, Tensor]:
        """Unweighted terms ``{"invariance", "equivariance", "variance", "pred_variance",
        "covariance"}`` for ``(B, d_i)`` invariant and ``(B, d_e)`` equivariant embeddings."""
        invariance = invariance_term(inv1, inv2)
        equivariance = invariance_term(pred2, equi2)
        x, y = torch.cat([inv1, equi1], dim=1), torch.cat([inv2, equi2], dim=1)
        if self.gather_distributed:
            x, y, pred2 = gather_with_grad(x), gather_with_grad(y), gather_with_grad(pred2)
        variance, covariance = variance_covariance(x, y, self.eps)
        pred_variance = 0.5 * variance_term(pred2, self.eps)
        return {
            "invariance": invariance,
            "equivariance": equivariance,
            "variance": variance,
            "pred_variance": pred_variance,
            "covariance": covariance,
        }

    def weighted(self, terms: dict[str, Tensor]) -> Tensor:
        """The total of :meth:`terms`' output."""
        return (
            self.inv_weight * terms["invariance"]
            + self.equi_factor * self.inv_weight * terms["equivariance"]
            + self.var_weight * (terms["variance"] + terms["pred_variance"])
            + self.cov_weight * terms["covariance"]
        )
