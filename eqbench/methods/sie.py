"""``sie``: SIE, split invariant-equivariant representations.

Garrido, Najman and LeCun, "Self-supervised learning of Split Invariant Equivariant
representations", ICML 2023, arXiv 2302.10283 (code ``facebookresearch/SIE``, class ``SIE`` in
``src/models.py``, ``--hypernetwork linear``). The backbone representation ``(B, D)`` is split into
an invariant part (the first ``D − d_equi`` channels) and an equivariant part (the last
``d_equi``, half in the paper); each has its own VICReg expander, whose widths are the
``expander_dims`` scaled by the part's share of ``D`` (as the official code). A hypernetwork maps
the transformation parameters ``t`` to a ``d_e × d_e`` matrix ``ρ(t)`` applied to the first view's
projected equivariant part to predict the second's; the loss is :class:`~eqbench.losses.SIELoss`
(invariance + ``0.45``·equivariance, weight 10, VICReg variance/covariance on the whole embeddings,
variance on the prediction).

Views, **eqbench defaults** (the paper renders 3D objects under known rotations): ``v1 = A1(I)``,
``u = A2(I)``, ``v2 = g_t(u)`` with ``g`` a continuous eqbench transformation (default ``rotation``,
``t`` uniform in [-45°, 45°], about the centre with zero fill, as TIR's second view), so ``t`` is
the transformation from ``u`` to ``v2`` (the base augmentations stay nuisances the invariant part
must ignore). The hypernetwork reads ``t`` rescaled to [-1, 1] by the transformation's range; as
the official default (``--hypernetwork linear``, no ``--bias-hypernet``, no ``--bias-pred``) it
is one bias-free ``Linear`` from ``t`` to the ``d_e²`` entries of ``ρ(t)``. Expander widths
512-512-512 (paper 2048-2048-2048 on a 512-d ResNet-18). Augmentations: VICReg's. Features: the
pooled backbone feature (``pool``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.losses import SIELoss
from eqbench.methods.augment import TwoViewAugment, build_augment_config
from eqbench.methods.base import Method, TrainBatch, projection_mlp, register_method
from eqbench.transforms import Transformation, build_transform


@dataclass
class SIEOptions:
    """Options of SIE.

    Attributes:
        transform: the transformation ``g`` of the second view (continuous).
        transform_options: its ranges, e.g. ``{"degrees": [-45, 45]}``.
        d_equi: width of the equivariant part of the representation (default ``D/2``, paper).
        expander_dims: widths of a whole-representation expander, split between the parts in
            proportion to their widths (paper 2048-2048-2048).
        inv_weight: ``s``, invariance weight (paper 10).
        equi_factor: equivariance weight relative to ``s`` (paper 0.45).
        var_weight: ``μ`` (paper 10).
        cov_weight: ``ν`` (paper 1).
        pool: ``avgpool`` (eqbench default) or ``cls``.
        augment: overrides of VICReg's augmentations.
    """

    transform: str = "rotation"
    transform_options: dict[str, Any] = field(default_factory=dict)
    d_equi: int | None = None
    expander_dims: list[int] = field(default_factory=lambda: [512, 512, 512])
    inv_weight: float = 10.0
    equi_factor: float = 0.45
    var_weight: float = 10.0
    cov_weight: float = 1.0
    pool: str = "avgpool"
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.inv_weight, self.equi_factor, self.var_weight, self.cov_weight) < 0:
            raise ConfigError("SIE weights must be >= 0.")
        if self.pool not in ("avgpool", "cls"):
            raise ConfigError(f"method option pool must be avgpool or cls, got '{self.pool}'.")


def split_widths(dims: list[int], share: float) -> list[int]:
    """``dims`` scaled by ``share`` and rounded (at least 1), as SIE's ``mlp_inv``/``mlp_equi``."""
    return [max(1, round(d * share)) for d in dims]


class HyperOperator(nn.Module):
    """``ρ(t)``: a bias-free linear map from parameters ``(B, P)`` to matrices ``(B, d, d)``,
    applied to ``e``.

    The official default (``facebookresearch/SIE``, ``src/hypernetwork.py`` lines 17-20:
    ``HyperNet`` with ``--hypernetwork linear`` is ``nn.Linear(latent_size, output_size,
    bias=args.bias_hypernet)``, ``--bias-hypernet`` being off in ``main.py`` line 48; lines 58-77,
    ``ParametrizedNet.forward``, view its output as the ``(d, d)`` weight ``W`` and return
    ``W·e``, with no bias since ``--bias-pred`` is off, ``main.py`` line 47).

    Args:
        param_dim: ``P``.
        dim: ``d``.
    """

    def __init__(self, param_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Linear(param_dim, dim * dim, bias=False)

    def forward(self, e: Tensor, t: Tensor) -> Tensor:
        """``ρ(t)·e``: ``e`` ``(B, d)``, ``t`` ``(B, P)`` → ``(B, d)``."""
        operator = self.net(t).view(-1, self.dim, self.dim)  # (B, d, d)
        return torch.bmm(operator, e.unsqueeze(2)).squeeze(2)


class SIE(Method):
    """SIE (arXiv 2302.10283) with a hypernetwork predictor on the equivariant part."""

    def __init__(self, encoder: Encoder, img_size: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.name = "sie"
        where = "method 'sie' options"
        opts = from_dict(SIEOptions, options, where)
        self.opts = opts
        self.encoder = encoder
        dim = encoder.embed_dim
        self.d_equi = opts.d_equi or dim // 2
        if not 0 < self.d_equi < dim:
            raise ConfigError(f"{where}: need 0 < d_equi < {dim} (the backbone width).")
        self.d_inv = dim - self.d_equi
        self.transform = build_sie_transform(opts, img_size, where)
        self.augment = TwoViewAugment(build_augment_config(opts.augment), img_size)
        inv_dims = split_widths(opts.expander_dims, self.d_inv / dim)
        equi_dims = split_widths(opts.expander_dims, self.d_equi / dim)
        self.inv_expander = projection_mlp(self.d_inv, inv_dims, last_bias=False)
        self.equi_expander = projection_mlp(self.d_equi, equi_dims, last_bias=False)
        low, _ = self.param_range()
        self.predictor = HyperOperator(low.numel(), equi_dims[-1])
        self.loss = SIELoss(opts.inv_weight, opts.equi_factor, opts.var_weight, opts.cov_weight)
        self.options = {
            **to_dict(opts),
            "d_equi": self.d_equi,
            "inv_expander_dims": inv_dims,
            "equi_expander_dims": equi_dims,
            "transform_options": self.transform.config(),
            "augment": self.augment.describe(),
        }

    def param_range(self) -> tuple[Tensor, Tensor]:
        """``(low, high)`` ``(P,)`` of the transformation's parameters."""
        bounds = getattr(self.transform, "param_bounds", None)
        if bounds is None:
            raise ConfigError(f"SIE transform '{self.opts.transform}' has no parameter range.")
        low, high = bounds()
        return low.float(), high.float()

    def scaled_params(self, theta: Tensor) -> Tensor:
        """``t`` rescaled from its range to [-1, 1], ``(B, P)``."""
        low, high = (b.to(theta.device) for b in self.param_range())
        span = torch.where(high > low, high - low, torch.ones_like(high))
        return 2 * (theta.float() - low) / span - 1

    @property
    def trained_feature(self) -> str | None:
        """The pooled backbone feature its losses see (option ``pool``)."""
        return str(self.opts.pool)

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """SIE's loss on ``v1`` and ``v2 = g_t(u)``.

        Draws, in order from ``batch.generator``: the two base views, then ``t``.
        """
        v1, u = self.augment(batch.images, batch.generator)  # (B, 3, S, S) each
        theta = self.transform.sample(u.shape[0], batch.generator).to(u.device)  # (B, P)
        v2 = self.transform.apply(u, theta)
        pooled = self.encoder(torch.cat([v1, v2])).pooled(self.opts.pool)  # (2B, D)
        inv, equi = pooled.split([self.d_inv, self.d_equi], dim=1)
        i1, i2 = (self.inv_expander(part) for part in inv.chunk(2))  # (B, d_i') each
        e1, e2 = (self.equi_expander(part) for part in equi.chunk(2))  # (B, d_e') each
        pred = self.predictor(e1, self.scaled_params(theta).to(e1.dtype))
        with torch.autocast(pooled.device.type, enabled=False):  # variances need fp32
            terms = self.loss.terms(i1.float(), i2.float(), e1.float(), e2.float(), pred.float())
            return {"loss": self.loss.weighted(terms), **terms}


def build_sie_transform(opts: SIEOptions, img_size: int, where: str) -> Transformation:
    """The transformation ``g``; it must be continuous (its parameters are regressed)."""
    transform = build_transform(opts.transform, img_size, **opts.transform_options)
    if transform.discrete:
        raise ConfigError(
            f"{where}: transform '{opts.transform}' is discrete; SIE conditions on continuous "
            "parameters. Use rotation, translation, se2, scale, colour or blur."
        )
    return transform


@register_method(
    "sie",
    paper="SIE: Garrido, Najman and LeCun, ICML 2023, arXiv 2302.10283",
    test_options={"expander_dims": [32, 32]},
)
def sie(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """SIE (arXiv 2302.10283): split invariant/equivariant representation with a hypernetwork."""
    return SIE(encoder, img_size, options)
