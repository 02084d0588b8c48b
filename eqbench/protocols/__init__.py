"""Evaluation protocols; importing this package registers them all."""

from __future__ import annotations

from eqbench.protocols import (  # noqa: F401
    classification,
    depth,
    detection,
    finetune,
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
