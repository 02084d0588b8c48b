"""Pretraining methods. Importing this package registers them all in :data:`METHODS`.

Base joint-embedding methods (``simclr``, ``vicreg``) register their objective in
:data:`OBJECTIVES` too; :mod:`eqbench.methods.tir` then registers ``tir+<base>`` for each.
Self-distillation methods (``dino``, ``ibot``, :mod:`eqbench.methods.dino`; ``dinov2``,
:mod:`eqbench.methods.dinov2`) own an EMA teacher; :mod:`eqbench.methods.tir_distill` registers
``tir+dino``, ``tir+ibot`` and ``tir+dinov2``. ``gtsa`` (:mod:`eqbench.methods.gtsa`) distils
rotated, overlapping crops on the patch-token map. ``rotation_supervised``
(:mod:`eqbench.methods.rotation_supervised`) is the probes' positive control, not an SSL method.
"""

from __future__ import annotations

from eqbench.methods import (  # noqa: F401  (registers)
    augself,
    dino,
    dinov2,
    equimod,
    essl,
    gtsa,
    mae,
    rotation_supervised,
    sie,
    simclr,
    tir,
    tir_distill,
    vicreg,
)
from eqbench.methods.augment import AugmentConfig, MultiCropAugment, TwoViewAugment
from eqbench.methods.base import (
    METHODS,
    OBJECTIVES,
    Method,
    Objective,
    TrainBatch,
    build_method,
)
from eqbench.methods.dino import SelfDistillation
from eqbench.methods.dinov2 import DINOv2
from eqbench.methods.tir import TIR, TIRDecoder, TIRViews
from eqbench.methods.tir_distill import TIRDINOv2, TIRDistillation

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "TIR",
    "AugmentConfig",
    "DINOv2",
    "Method",
    "MultiCropAugment",
    "Objective",
    "SelfDistillation",
    "TIRDINOv2",
    "TIRDecoder",
    "TIRDistillation",
    "TIRViews",
    "TrainBatch",
    "TwoViewAugment",
    "build_method",
]
