"""Pretraining losses against hand-computed values and lightly's reference implementations."""

from __future__ import annotations

import math

import pytest
import torch

from eqbench.errors import EqbenchError
from eqbench.losses import NTXentLoss, VICRegLoss


def test_vicreg_hand_computed() -> None:
    # z_a: both channels (0, 2) → unbiased var 2 (std > 1: no hinge), covariance 2 off-diagonal
    # → Σ off-diag² / D = (4 + 4) / 2 = 4. z_b constant → std sqrt(1e-4) = 0.01, hinge 0.99.
    z_a = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    z_b = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    loss_fn = VICRegLoss()
    terms = loss_fn.terms(z_a, z_b)
    assert terms["invariance"].item() == pytest.approx(1.0)
    assert terms["variance"].item() == pytest.approx(0.5 * 0.99)
    assert terms["covariance"].item() == pytest.approx(4.0)
    assert loss_fn(z_a, z_b).item() == pytest.approx(25 * 1.0 + 25 * 0.495 + 4.0)


@pytest.mark.parametrize("shape", [(8, 16), (32, 5)])
def test_vicreg_matches_lightly(shape: tuple[int, int]) -> None:
    from lightly.loss import VICRegLoss as LightlyVICReg

    gen = torch.Generator().manual_seed(1)
    z_a = torch.randn(*shape, generator=gen) * 0.7
    z_b = z_a + 0.3 * torch.randn(*shape, generator=gen)
    ours = VICRegLoss(inv_weight=25, var_weight=25, cov_weight=1)(z_a, z_b)
    ref = LightlyVICReg(lambda_param=25, mu_param=25, nu_param=1)(z_a, z_b)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    # Different weights, to check each term is weighted as lightly weights it.
    ours = VICRegLoss(inv_weight=2, var_weight=3, cov_weight=5)(z_a, z_b)
    ref = LightlyVICReg(lambda_param=2, mu_param=3, nu_param=5)(z_a, z_b)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_vicreg_gradients_match_lightly() -> None:
    from lightly.loss import VICRegLoss as LightlyVICReg

    gen = torch.Generator().manual_seed(2)
    z_a = torch.randn(6, 4, generator=gen, requires_grad=True)
    z_b = torch.randn(6, 4, generator=gen, requires_grad=True)
    (g_ours,) = torch.autograd.grad(VICRegLoss()(z_a, z_b), z_a)
    (g_ref,) = torch.autograd.grad(LightlyVICReg()(z_a, z_b), z_a)
    torch.testing.assert_close(g_ours, g_ref)


def test_vicreg_rejects_bad_shapes() -> None:
    with pytest.raises(EqbenchError, match="same shape"):
        VICRegLoss()(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(EqbenchError, match="batch_size"):
        VICRegLoss()(torch.zeros(1, 3), torch.zeros(1, 3))


def test_ntxent_hand_computed() -> None:
    # Orthonormal pairs: each anchor has its positive at cosine 1 and two negatives at 0, so
    # ℓ = -log(e^{1/τ} / (e^{1/τ} + 2)) = log(1 + 2 e^{-1/τ}) for all four anchors.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = NTXentLoss(temperature=0.5)(z, 3.0 * z)  # scale must not matter (cosine)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.2, 0.5])
def test_ntxent_matches_lightly(temperature: float) -> None:
    from lightly.loss import NTXentLoss as LightlyNTXent

    gen = torch.Generator().manual_seed(3)
    z_a = torch.randn(10, 8, generator=gen)
    z_b = z_a + 0.5 * torch.randn(10, 8, generator=gen)
    ours = NTXentLoss(temperature=temperature)(z_a, z_b)
    ref = LightlyNTXent(temperature=temperature)(z_a, z_b)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_ntxent_positive_pairs_lower_the_loss() -> None:
    gen = torch.Generator().manual_seed(4)
    z_a = torch.randn(16, 8, generator=gen)
    aligned = NTXentLoss()(z_a, z_a + 0.01 * torch.randn(16, 8, generator=gen))
    shuffled = NTXentLoss()(z_a, z_a[torch.randperm(16, generator=gen)])
    assert aligned.item() < shuffled.item()


def test_ntxent_rejects_bad_temperature() -> None:
    with pytest.raises(EqbenchError, match="temperature"):
        NTXentLoss(temperature=0.0)
