"""Pretraining methods. Importing this package registers them all in :data:`METHODS`.

Base joint-embedding methods (``simclr``, ``vicreg``) register their objective in
:data:`OBJECTIVES` too; :mod:`eqbench.methods.tir` then registers ``tir+<base>`` for each.
"""

from __future__ import annotations

from eqbench.methods import simclr, tir, vicreg  # noqa: F401  (registers the methods)
from eqbench.methods.augment import AugmentConfig, TwoViewAugment
from eqbench.methods.base import (
    METHODS,
    OBJECTIVES,
    Method,
    Objective,
    TrainBatch,
    build_method,
)
from eqbench.methods.tir import TIR, TIRDecoder, TIRViews

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "TIR",
    "AugmentConfig",
    "Method",
    "Objective",
    "TIRDecoder",
    "TIRViews",
    "TrainBatch",
    "TwoViewAugment",
    "build_method",
]
