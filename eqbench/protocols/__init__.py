"""Evaluation protocols; importing this package registers them all.

One package per task family holds both the registered :class:`Protocol` classes (its
``__init__``) and their numerics (its modules): ``classification`` (kNN, linear probes,
finetuning), ``transform_prediction``, ``invariance``, ``segmentation``, ``detection``, ``depth``,
``pose``, ``video`` and ``homography``; ``openmmlab`` drives the mmseg / mmdet tasks. ``base`` and
``views`` are shared. :mod:`eqbench.protocols.run` runs a list of tasks on one checkpoint and
:mod:`eqbench.protocols.launch` submits that run through submitit.
"""

from __future__ import annotations

from eqbench.protocols import (  # noqa: F401
    classification,
    depth,
    detection,
    homography,
    invariance,
    openmmlab,
    pose,
    segmentation,
    transform_prediction,
    video,
)
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol

__all__ = ["PROTOCOLS", "EvalContext", "MetricValues", "Protocol"]
