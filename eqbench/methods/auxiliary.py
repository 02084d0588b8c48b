"""Joint-embedding methods with an auxiliary equivariance head (E-SSL, AugSelf, EquiMod).

Each keeps a base two-view objective (SimCLR or VICReg, :data:`~eqbench.methods.base.OBJECTIVES`)
on the pooled backbone feature, with the base method's own augmentations, and adds a head and a
loss of its own. :class:`AuxiliaryMethod` holds what they share: the option split (the method's
dataclass, which must derive from :class:`AuxiliaryOptions`, beside the base objective's options),
the objective, the augmentations and the logged options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from eqbench.backbones import Encoder
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.methods.augment import TwoViewAugment, build_augment_config
from eqbench.methods.base import OBJECTIVES, Method, build_objective, split_options


@dataclass
class AuxiliaryOptions:
    """Options every auxiliary method has (its own options extend these).

    Attributes:
        base: the invariance objective, any in :data:`~eqbench.methods.base.OBJECTIVES`
            (``simclr``, ``vicreg``).
        pool: backbone feature fed to the objective and the heads: ``avgpool`` (mean patch
            token, **eqbench default**, as :class:`~eqbench.methods.joint.JointEmbedding`) or
            ``cls``.
        augment: overrides of the base method's augmentations.
    """

    base: str = "simclr"
    pool: str = "avgpool"
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base not in OBJECTIVES:
            raise ConfigError(
                f"method option base must be one of {OBJECTIVES.names()}, got '{self.base}'."
            )
        if self.pool not in ("avgpool", "cls"):
            raise ConfigError(f"method option pool must be avgpool or cls, got '{self.pool}'.")


class AuxiliaryMethod(Method):
    """Base objective + augmentations; subclasses add their head in :meth:`build_heads`.

    Args:
        name: registry name.
        encoder: the backbone.
        img_size: side of the views in pixels.
        options: the subclass's :attr:`options_class` fields and the base objective's, mixed.
    """

    options_class: ClassVar[type[AuxiliaryOptions]] = AuxiliaryOptions

    def __init__(self, name: str, encoder: Encoder, img_size: int, options: dict[str, Any]):
        super().__init__()
        self.name = name
        where = f"method '{name}' options"
        default_base = next(
            f.default for f in dataclasses.fields(self.options_class) if f.name == "base"
        )
        base = str(options.get("base", default_base))
        if base not in OBJECTIVES:
            raise ConfigError(f"{where}: base must be one of {OBJECTIVES.names()}, got '{base}'.")
        objective_cls = OBJECTIVES.get(base)
        own, objective_options = split_options(
            options, [self.options_class, objective_cls.options_class], where
        )
        self.opts = from_dict(self.options_class, own, where)
        self.encoder = encoder
        self.img_size = img_size
        self.pool = self.opts.pool
        self.augment = TwoViewAugment(
            build_augment_config(self.opts.augment, objective_cls.augment_defaults), img_size
        )
        self.objective = build_objective(base, encoder.embed_dim, objective_options, where)
        self.build_heads()
        self.options = {
            **to_dict(self.opts),
            "augment": self.augment.describe(),
            **to_dict(from_dict(objective_cls.options_class, objective_options, where)),
        }

    def build_heads(self) -> None:
        """Create the method's own modules (called once the objective exists)."""

    @property
    def trained_feature(self) -> str | None:
        """The pooled backbone feature its losses see (option ``pool``)."""
        return str(self.pool)

    def pooled(self, views: list[Tensor]) -> list[Tensor]:
        """Encode the views ``(B, 3, S, S)`` in one pass; their pooled features ``(B, D)``."""
        features = self.encoder(torch.cat(views)).pooled(self.pool)  # (V·B, D)
        return list(features.chunk(len(views)))

    def base_losses(self, f1: Tensor, f2: Tensor) -> dict[str, Tensor]:
        """The base objective's losses, its total renamed ``"ssl"`` (and kept as ``"loss"``)."""
        ssl = self.objective(f1, f2)
        out = {"loss": ssl["loss"], "ssl": ssl["loss"]}
        out.update({k: v for k, v in ssl.items() if k != "loss"})
        return out
