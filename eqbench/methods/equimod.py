"""``equimod``: EquiMod, an equivariance module conditioned on the augmentation parameters.

Devillers and Lefort, "EquiMod: An Equivariance Module to Improve Visual Instance
Discrimination", ICLR 2023, arXiv 2211.01244 (code ``ADevillers/EquiMod``, ``src/model.py``,
``src/main.py``). Beside the base objective (SimCLR, ``base: simclr``) on the two views, the
un-augmented image ``x₀`` goes through the backbone too; an equivariant projector ``h'`` maps the
features of ``x₀``, ``v₁``, ``v₂`` to ``y₀``, ``y₁``, ``y₂``; a parameter projection embeds each
view's augmentation parameters ``t_i`` and the predictor ``u`` maps ``[y₀, emb(t_i)]`` to
``ŷ_i``. The equivariant loss is NT-Xent over the ``2·2B`` embeddings ``[y₁, y₂, ŷ₁, ŷ₂]`` with
``(y_i, ŷ_i)`` positive (the official code's ``NTXentLoss(cat[yt, yt_hat])``), temperature
``τ'``; ``L = L_SSL + λ·L_equi``, ``λ = 1``.

Modules as the official code: ``h'`` = ``Linear-BN-ReLU`` ×2, ``Linear``, ``BatchNorm``
(no affine), no biases; parameter projection ``Linear-BN`` (no bias); predictor
``Linear([y, emb]) → BN`` (no bias, no affine).

**eqbench defaults**: ``x₀`` is the whole image resized to the training size (bilinear,
antialiased); ``t_i`` are the 12 columns of :class:`~eqbench.methods.augment.ViewParams` but
rotation (crop box, flip, jitter offsets, grayscale, blur σ at 224 px, solarise), not standardised
by dataset statistics as in the official code (the parameter projection's BatchNorm normalises
its output); ``h'`` widths 512-512-128 (paper 2048-2048-2048 on a ResNet-50); ``τ' = 0.2``.
Note the reference for the prediction is ``x₀``, not the other view (as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.errors import ConfigError
from eqbench.losses import NTXentLoss
from eqbench.methods.augment import VIEW_PARAM_COLUMNS, ViewParams, to_unit_float
from eqbench.methods.auxiliary import AuxiliaryMethod, AuxiliaryOptions
from eqbench.methods.base import Method, TrainBatch, register_method

#: Width of the augmentation parameters EquiMod conditions on (all but rotation).
EQUIMOD_PARAM_DIM = len(VIEW_PARAM_COLUMNS) - 1


@dataclass
class EquiModOptions(AuxiliaryOptions):
    """Options of EquiMod (the base objective's options sit beside them).

    Attributes:
        equi_weight: ``λ`` (paper 1).
        equi_temperature: ``τ'`` of the equivariant NT-Xent (eqbench default 0.2).
        equi_projector_dims: widths of ``h'`` (paper 2048, 2048, 2048).
    """

    equi_weight: float = 1.0
    equi_temperature: float = 0.2
    equi_projector_dims: list[int] = field(default_factory=lambda: [512, 512, 128])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.equi_weight < 0 or self.equi_temperature <= 0:
            raise ConfigError("EquiMod needs equi_weight >= 0 and equi_temperature > 0.")
        if not self.equi_projector_dims or min(self.equi_projector_dims) < 1:
            raise ConfigError("EquiMod equi_projector_dims must be positive widths.")


def equimod_projector(in_dim: int, dims: list[int]) -> nn.Sequential:
    """``h'``: ``Linear-BN-ReLU`` per hidden width, then ``Linear → BN(affine=False)``."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in dims[:-1]:
        layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
        width = hidden
    layers += [nn.Linear(width, dims[-1], bias=False), nn.BatchNorm1d(dims[-1], affine=False)]
    return nn.Sequential(*layers)


def equimod_params(params: ViewParams) -> Tensor:
    """``(B, 12)`` float32: the view's parameters without the rotation column."""
    return params.as_tensor()[:, :EQUIMOD_PARAM_DIM]


class EquiMod(AuxiliaryMethod):
    """EquiMod (arXiv 2211.01244): base objective + augmentation-conditioned equivariance."""

    options_class = EquiModOptions
    opts: EquiModOptions

    def build_heads(self) -> None:
        y_dim = self.opts.equi_projector_dims[-1]
        self.equi_projector = equimod_projector(
            self.encoder.embed_dim, self.opts.equi_projector_dims
        )
        self.param_projector = nn.Sequential(
            nn.Linear(EQUIMOD_PARAM_DIM, y_dim, bias=False), nn.BatchNorm1d(y_dim)
        )
        self.equi_predictor = nn.Sequential(
            nn.Linear(2 * y_dim, y_dim, bias=False), nn.BatchNorm1d(y_dim, affine=False)
        )
        self.equi_loss = NTXentLoss(self.opts.equi_temperature)

    def original(self, images: Tensor) -> Tensor:
        """``x₀``: the whole images resized to the training size, ``(B, 3, S, S)`` in [0, 1]."""
        x = to_unit_float(images)
        if x.shape[-1] == self.img_size and x.shape[-2] == self.img_size:
            return x
        size = (self.img_size, self.img_size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def equivariant_embeddings(
        self, f0: Tensor, f1: Tensor, f2: Tensor, p1: ViewParams, p2: ViewParams
    ) -> tuple[Tensor, Tensor]:
        """``(y_t, ŷ_t)``, both ``(2B, y)``: the embeddings of ``[v₁, v₂]`` and their
        predictions from ``x₀``'s embedding and the views' parameters."""
        y = self.equi_projector(torch.cat([f0, f1, f2]))  # (3B, y), one BatchNorm batch
        y0, yt = y[: f0.shape[0]], y[f0.shape[0] :]
        params = torch.cat([equimod_params(p1), equimod_params(p2)]).to(y.device, y.dtype)
        embedded = self.param_projector(params)  # (2B, y)
        predicted = self.equi_predictor(torch.cat([torch.cat([y0, y0]), embedded], dim=1))
        return yt, predicted

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """``L_SSL(v1, v2) + λ·NT-Xent'([y₁, y₂], [ŷ₁, ŷ₂])``."""
        v1, v2, p1, p2 = self.augment.with_params(batch.images, batch.generator)
        x0 = self.original(batch.images).to(v1.device)
        f0, f1, f2 = self.pooled([x0, v1, v2])  # (B, D) each
        out = self.base_losses(f1, f2)
        yt, predicted = self.equivariant_embeddings(f0, f1, f2, p1, p2)
        with torch.autocast(yt.device.type, enabled=False):
            out["equi"] = self.equi_loss(yt.float(), predicted.float())
        out["loss"] = out["ssl"] + self.opts.equi_weight * out["equi"]
        return out


@register_method(
    "equimod",
    paper="EquiMod: Devillers and Lefort, ICLR 2023, arXiv 2211.01244",
    test_options={"projector_dims": [32, 16], "equi_projector_dims": [32, 16]},
)
def equimod(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """EquiMod (arXiv 2211.01244): augmentation-conditioned equivariance added to SimCLR."""
    return EquiMod("equimod", encoder, img_size, options)
