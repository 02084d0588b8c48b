"""``vicreg``: VICReg (Bardes, Ponce and LeCun, ICLR 2022, arXiv 2105.04906).

Backbone global feature → expander MLP (``Linear-BN-ReLU`` ×2, ``Linear``) → VICReg loss
(25 / 25 / 1) on the two views. The paper's expander is 8192-8192-8192 (on a ResNet-50); the
**eqbench default** is 1024-1024-1024 so that CPU runs stay fast — the ImageNet config sets the
paper's widths. Augmentations: VICReg's (see :mod:`eqbench.methods.augment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from eqbench.errors import ConfigError
from eqbench.losses import VICRegLoss
from eqbench.methods.base import Objective, projection_mlp
from eqbench.methods.joint import register_objective


@dataclass
class VICRegOptions:
    """Options of the VICReg objective.

    Attributes:
        expander_dims: widths of the expander layers (paper: 8192, 8192, 8192).
        inv_weight: ``λ``, invariance weight (paper: 25).
        var_weight: ``μ``, variance weight (paper: 25).
        cov_weight: ``ν``, covariance weight (paper: 1).
        eps: variance epsilon (paper: 1e-4).
    """

    expander_dims: list[int] = field(default_factory=lambda: [1024, 1024, 1024])
    inv_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    eps: float = 1e-4

    def __post_init__(self) -> None:
        if min(self.inv_weight, self.var_weight, self.cov_weight) < 0 or self.eps <= 0:
            raise ConfigError("VICReg weights must be >= 0 and eps > 0.")


@register_objective(
    "vicreg",
    paper="VICReg: Bardes, Ponce and LeCun, ICLR 2022, arXiv 2105.04906",
    description="Expander and variance-invariance-covariance loss on two views.",
    test_options={"expander_dims": [32, 32]},
)
class VICRegObjective(Objective):
    """Expander + :class:`~eqbench.losses.VICRegLoss`.

    Args:
        in_dim: width of the global features.
        options: :class:`VICRegOptions`.
    """

    options_class = VICRegOptions

    def __init__(self, in_dim: int, options: VICRegOptions) -> None:
        super().__init__(in_dim)
        # The official expander's last Linear has no bias.
        self.expander = projection_mlp(in_dim, options.expander_dims, last_bias=False)
        self.loss = VICRegLoss(
            options.inv_weight, options.var_weight, options.cov_weight, options.eps
        )

    def forward(self, f1: Tensor, f2: Tensor) -> dict[str, Tensor]:
        """``{"loss", "invariance", "variance", "covariance"}`` for features ``(B, in_dim)``."""
        z1, z2 = self.expander(f1).float(), self.expander(f2).float()  # (B, E) each
        with torch.autocast(z1.device.type, enabled=False):  # variances need fp32, not bf16
            terms = self.loss.terms(z1, z2)
            return {"loss": self.loss.weighted(terms), **terms}
