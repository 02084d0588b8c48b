"""Pretraining methods. Importing this package imports every module in it, and so registers every
method in :data:`METHODS`: a new method is a new module here, with no list to extend.

Base joint-embedding methods (``simclr``, ``vicreg``) register their objective in
:data:`OBJECTIVES` too (:func:`~eqbench.methods.joint.register_objective`); ``tir+<base>`` then
resolves for each of them on lookup (:mod:`eqbench.methods.tir`), whenever the base was registered.
Self-distillation methods (``dino``, ``ibot``, :mod:`eqbench.methods.dino`; ``dinov2``,
:mod:`eqbench.methods.dinov2`) own an EMA teacher; :mod:`eqbench.methods.tir_distill` registers
``tir+dino``, ``tir+ibot`` and ``tir+dinov2``. ``gtsa`` (:mod:`eqbench.methods.gtsa`) distils
rotated, overlapping crops on the patch-token map. ``rotation_supervised``
(:mod:`eqbench.methods.rotation_supervised`) is the probes' positive control, not an SSL method.
"""

from __future__ import annotations

import importlib
import pkgutil

from eqbench.methods.augment import AugmentConfig, MultiCropAugment, TwoViewAugment
from eqbench.methods.base import (
    METHODS,
    OBJECTIVES,
    Method,
    MethodEntry,
    Objective,
    TrainBatch,
    build_method,
    register_method,
)
from eqbench.methods.dino import SelfDistillation
from eqbench.methods.dinov2 import DINOv2
from eqbench.methods.joint import register_objective
from eqbench.methods.tir import TIR, TIRDecoder, TIRViews
from eqbench.methods.tir_distill import TIRDINOv2, TIRDistillation

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "TIR",
    "AugmentConfig",
    "DINOv2",
    "Method",
    "MethodEntry",
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
    "register_method",
    "register_objective",
]
