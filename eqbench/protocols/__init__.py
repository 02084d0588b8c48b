"""Evaluation protocols; importing this package registers them all."""

from __future__ import annotations

from eqbench.protocols import classification, invariance, transform_prediction  # noqa: F401
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol

__all__ = ["PROTOCOLS", "EvalContext", "MetricValues", "Protocol"]
