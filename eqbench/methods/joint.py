"""The two-view joint-embedding pipeline shared by SimCLR and VICReg.

``images → (v1, v2) = augment(images) → encoder → global feature (mean patch token or CLS)
→ objective (projector/expander + loss)``, as in SimCLR (arXiv 2002.05709, Fig. 2) and VICReg
(arXiv 2105.04906, Fig. 1). Both views go through the backbone in one batch; the projector sees
each view separately, so its BatchNorm statistics are per view as in the official VICReg code.

:func:`register_objective` is the one decorator of a base method: it registers the objective
(which TIR and the auxiliary methods build on, so ``tir+<name>`` exists from then on) and the
two-view method of the same name, with its paper and test options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from eqbench.backbones import Encoder
from eqbench.backbones.base import FEATURE_KINDS
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.methods.augment import TwoViewAugment, build_augment_config
from eqbench.methods.base import (
    OBJECTIVES,
    Method,
    MethodFactory,
    Objective,
    TrainBatch,
    build_objective,
    register_method,
    split_options,
)


@dataclass
class JointEmbeddingOptions:
    """Options of the two-view pipeline itself (the objective has its own).

    Attributes:
        pool: global feature fed to the objective: ``avgpool`` (mean patch token, **eqbench
            default**, the same pooling TIR applies to its invariant part) or ``cls``.
        augment: overrides of :class:`~eqbench.methods.augment.AugmentConfig`.
    """

    pool: str = "avgpool"
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pool not in ("avgpool", "cls"):
            raise ConfigError(f"method option pool must be avgpool or cls, got '{self.pool}'.")


class JointEmbedding(Method):
    """A base joint-embedding method: two augmented views, a global feature, an objective.

    Args:
        name: registry name, e.g. ``"vicreg"``.
        encoder: the backbone.
        objective: projector + loss on the global features.
        augment: makes the two views.
        pool: ``avgpool`` or ``cls``.
    """

    def __init__(
        self,
        name: str,
        encoder: Encoder,
        objective: Objective,
        augment: TwoViewAugment,
        pool: str,
    ) -> None:
        super().__init__()
        if pool not in FEATURE_KINDS:
            raise ConfigError(f"Unknown pool '{pool}'; use one of {FEATURE_KINDS}.")
        self.name = name
        self.encoder = encoder
        self.objective = objective
        self.augment = augment
        self.pool = pool
        self.options = {}

    @property
    def trained_feature(self) -> str | None:
        """The pooled backbone feature its losses see (option ``pool``)."""
        return str(self.pool)

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """Augment, encode both views in one pass, pool, apply the objective."""
        v1, v2 = self.augment(batch.images, batch.generator)  # (B, 3, S, S) each
        features = self.encoder(torch.cat([v1, v2]))
        pooled = features.pooled(self.pool)  # (2B, D)
        f1, f2 = pooled.chunk(2)  # (B, D) each
        return self.objective(f1, f2)


def joint_embedding_factory(objective_name: str) -> MethodFactory:
    """The :data:`~eqbench.methods.base.METHODS` factory of a base method.

    Args:
        objective_name: a name in :data:`~eqbench.methods.base.OBJECTIVES`; its class's
            ``augment_defaults`` are the method's own augmentation defaults (SimCLR's jitter).
    """

    def factory(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
        where = f"method '{objective_name}' options"
        objective_cls = OBJECTIVES.get(objective_name)
        own, objective_options = split_options(
            options, [JointEmbeddingOptions, objective_cls.options_class], where
        )
        opts = from_dict(JointEmbeddingOptions, own, where)
        defaults = objective_cls.augment_defaults
        augment = TwoViewAugment(build_augment_config(opts.augment, defaults), img_size)
        objective = build_objective(objective_name, encoder.embed_dim, objective_options, where)
        method = JointEmbedding(objective_name, encoder, objective, augment, opts.pool)
        method.options = {
            "pool": opts.pool,
            "augment": augment.describe(),
            **to_dict(from_dict(objective_cls.options_class, objective_options, where)),
        }
        return method

    factory.__name__ = objective_name
    factory.__doc__ = f"Joint-embedding method with the '{objective_name}' objective."
    return factory


def register_objective(
    name: str, *, paper: str, description: str, test_options: dict[str, Any] | None = None
) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator registering an :class:`Objective` and its two-view method ``name``.

    The objective joins :data:`~eqbench.methods.base.OBJECTIVES` (so ``tir+<name>`` resolves,
    and ``base: <name>`` works for ``essl``, ``augself`` and ``equimod``); the method joins
    :data:`~eqbench.methods.base.METHODS` with the metadata of
    :func:`~eqbench.methods.base.register_method`.

    Args:
        name: the objective's and the method's name.
        paper: authors, venue and arXiv id.
        description: one line on the objective.
        test_options: small options of the objective (``tir+<name>`` reuses them).
    """

    def deco(cls: type[Objective]) -> type[Objective]:
        OBJECTIVES.add(name, cls, description=description)
        register_method(name, paper=paper, description=description, test_options=test_options)(
            joint_embedding_factory(name)
        )
        return cls

    return deco
