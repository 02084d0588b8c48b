"""``simclr``: SimCLR (Chen, Kornblith, Norouzi and Hinton, ICML 2020, arXiv 2002.05709).

Backbone global feature → projection head ``g`` (``Linear-BN-ReLU-Linear``) → NT-Xent on the two
views. The paper's head is 2048 → 2048 → 128 on a ResNet-50; the **eqbench default** is
``in → 512 → 128``. Temperature: **eqbench default** 0.2 (paper 0.1 on ImageNet, 0.5 on
CIFAR-10; see :mod:`eqbench.losses.ntxent`). Augmentations: SimCLR's (jitter strength 1,
blur p 0.5, no solarisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from eqbench.errors import ConfigError
from eqbench.losses import NTXentLoss
from eqbench.losses.ntxent import DEFAULT_TEMPERATURE
from eqbench.methods.augment import SIMCLR_AUGMENT
from eqbench.methods.base import Objective, projection_mlp
from eqbench.methods.joint import register_objective


@dataclass
class SimCLROptions:
    """Options of the SimCLR objective.

    Attributes:
        projector_dims: hidden and output widths of the projection head (paper: 2048, 128).
        temperature: NT-Xent ``τ`` (eqbench default 0.2).
    """

    projector_dims: list[int] = field(default_factory=lambda: [512, 128])
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"SimCLR temperature must be > 0, got {self.temperature}.")


@register_objective(
    "simclr",
    paper="SimCLR: Chen, Kornblith, Norouzi and Hinton, ICML 2020, arXiv 2002.05709",
    description="Projection head and NT-Xent loss on two views (SimCLR's augmentations).",
    test_options={"projector_dims": [32, 16]},
)
class SimCLRObjective(Objective):
    """Projection head + :class:`~eqbench.losses.NTXentLoss`.

    Args:
        in_dim: width of the global features.
        options: :class:`SimCLROptions`.
    """

    options_class = SimCLROptions
    augment_defaults = SIMCLR_AUGMENT

    def __init__(self, in_dim: int, options: SimCLROptions) -> None:
        super().__init__(in_dim)
        self.projector = projection_mlp(in_dim, options.projector_dims)
        self.loss = NTXentLoss(options.temperature)

    def forward(self, f1: Tensor, f2: Tensor) -> dict[str, Tensor]:
        """``{"loss", "ntxent"}`` for features ``(B, in_dim)``."""
        z1, z2 = self.projector(f1).float(), self.projector(f2).float()  # (B, E) each
        with torch.autocast(z1.device.type, enabled=False):  # logits / τ need fp32, not bf16
            loss = self.loss(z1, z2)
        return {"loss": loss, "ntxent": loss}
