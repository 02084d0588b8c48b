"""``essl``: E-SSL, four-fold rotation prediction on top of an invariance method.

Dangovski et al., "Equivariant Contrastive Learning" (E-SSL), ICLR 2022, arXiv 2111.00899
(code ``rdangovs/essl``). The base objective (SimCLR in the paper, ``base: simclr``; VICReg with
``base: vicreg``) is trained on the two usual views; extra views rotated by ``k·90°`` (eqbench's
``rotation4`` transformation, ``k`` uniform in {0, 1, 2, 3}) go through the same backbone, and a
small MLP predictor on their feature classifies ``k`` with cross-entropy. ``L = L_SSL + λ·L_rot``,
``λ = 0.4`` (the paper's ImageNet value).

**eqbench defaults** where the paper differs or is silent: one rotated view per image, a third
view drawn from the base augmentations (first-view probabilities) at the training size, rotated by
its own random ``k`` (the paper's ImageNet code rotates small 96 px crops by all four ``k``); the
predictor reads the pooled backbone feature (``pool``), the same one the base objective gets.

The predictor is the official one (:func:`rotation_head`): ``Linear-LayerNorm-ReLU`` ×2, then
``Linear-LayerNorm`` to 128, then ``Linear`` to 4; widths 2048-2048-128 on ImageNet (the official
first widths are the ResNet-50 feature width), 512-512-128 in the CPU config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.errors import ConfigError
from eqbench.methods.augment import to_unit_float
from eqbench.methods.auxiliary import AuxiliaryMethod, AuxiliaryOptions
from eqbench.methods.base import Method, TrainBatch, register_method
from eqbench.transforms import build_transform


@dataclass
class ESSLOptions(AuxiliaryOptions):
    """Options of E-SSL (the base objective's options sit beside them).

    Attributes:
        rotation_weight: ``λ`` (paper 0.4).
        predictor_dims: widths of the rotation predictor's layers before its 4-way output
            (official: 2048, 2048, 128); see :func:`rotation_head`.
    """

    rotation_weight: float = 0.4
    predictor_dims: list[int] = field(default_factory=lambda: [2048, 2048, 128])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rotation_weight < 0:
            raise ConfigError(f"E-SSL rotation_weight must be >= 0, got {self.rotation_weight}.")
        if not self.predictor_dims or any(d <= 0 for d in self.predictor_dims):
            raise ConfigError(
                f"E-SSL predictor_dims must be a non-empty list of positive ints, got "
                f"{self.predictor_dims}."
            )


def rotation_head(in_dim: int, dims: list[int], n_classes: int = 4) -> nn.Sequential:
    """E-SSL's rotation predictor: ``Linear → LayerNorm → ReLU`` for every width but the last,
    ``Linear → LayerNorm`` for the last (no ReLU), then ``Linear`` to ``n_classes``.

    The official ``rotation_projector`` (``rdangovs/essl``, ``imagenet/simclr/main.py`` lines
    192-200): ``Linear(2048, 2048), LayerNorm(2048), ReLU, Linear(2048, 2048), LayerNorm(2048),
    ReLU, Linear(2048, 128), LayerNorm(128), Linear(128, 4)``, i.e. ``dims = [2048, 2048, 128]``.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for i, out in enumerate(dims):
        layers += [nn.Linear(width, out), nn.LayerNorm(out)]
        if i < len(dims) - 1:
            layers.append(nn.ReLU(inplace=True))
        width = out
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


class ESSL(AuxiliaryMethod):
    """E-SSL (arXiv 2111.00899): base objective + four-fold rotation prediction."""

    options_class = ESSLOptions
    opts: ESSLOptions

    def build_heads(self) -> None:
        self.rotation = build_transform("rotation4", self.img_size)
        self.predictor = rotation_head(
            self.encoder.embed_dim, self.opts.predictor_dims, self.rotation.num_classes
        )

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """``L_SSL(v1, v2) + λ·CE(predictor(f(rot_k(v3))), k)``.

        Draws, in order: the two base views, the third view, the ``k``.
        """
        x = to_unit_float(batch.images)
        v1, v2 = self.augment(x, batch.generator)  # (B, 3, S, S) each
        v3 = self.augment.view(x, 0, batch.generator)
        k = self.rotation.sample(x.shape[0], batch.generator)  # (B, 1) float class indices
        rotated = self.rotation.apply(v3, k.to(v3.device))
        f1, f2, f3 = self.pooled([v1, v2, rotated])  # (B, D) each
        out = self.base_losses(f1, f2)
        logits = self.predictor(f3).float()  # (B, 4)
        labels = k[:, 0].long().to(logits.device)
        out["rotation"] = F.cross_entropy(logits, labels)
        out["rotation_acc"] = (logits.argmax(dim=1) == labels).float().mean().detach()
        out["loss"] = out["ssl"] + self.opts.rotation_weight * out["rotation"]
        return out


@register_method(
    "essl",
    paper="E-SSL: Dangovski et al., ICLR 2022, arXiv 2111.00899",
    test_options={"projector_dims": [32, 16], "predictor_dims": [16]},
)
def essl(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """E-SSL (arXiv 2111.00899): rotation prediction added to SimCLR or VICReg."""
    return ESSL("essl", encoder, img_size, options)
