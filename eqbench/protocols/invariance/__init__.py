"""Invariance score per transformation (a diagnostic beside the equivariance probes).

``invariance = (cos(f I, f gI) − cos_unrelated) / (1 − cos_unrelated)``: 1 when the features do not
move under ``g``, 0 when ``g`` moves them as far as swapping in an unrelated image. It reads the
same cached test-split pairs as the transform-prediction probe of the same transformation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eqbench.features.store import FeatureRequest, check_feature
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol
from eqbench.protocols.invariance.score import invariance_score
from eqbench.protocols.transform_prediction import (
    TransformPredictionConfig,
    encode_pairs,
    pair_requests,
)


@dataclass(frozen=True)
class InvarianceConfig:
    """Options of an invariance task; the image options match the transform-prediction task's,
    so both share cached features."""

    transformation: str
    options: dict[str, Any] = field(default_factory=dict)
    n_test: int = 2000
    image_size: int = 64
    context_ratio: float = 2.0
    feature: str = "auto"

    def __post_init__(self) -> None:
        check_feature(self.feature, "invariance task")


@PROTOCOLS.register("invariance")
class Invariance(Protocol):
    """Cosine-similarity invariance of the frozen features under ``g``."""

    Config = InvarianceConfig
    metrics = ("invariance", "cos_pair", "cos_unrelated")
    units = dict.fromkeys(metrics, "score")

    def feature_requests(self, config: Any, ctx: EvalContext) -> list[FeatureRequest]:
        cfg: InvarianceConfig = config
        identity, transformed, _, _ = pair_requests(_pairs(cfg), ctx, "test", cfg.n_test)
        return [identity, transformed]

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: InvarianceConfig = config
        f_id, f_g, _, _ = encode_pairs(_pairs(cfg), ctx, "test", cfg.n_test)
        res = invariance_score(f_id.numpy(), f_g.numpy(), seed=ctx.seed)
        return {k: [float(res[k])] for k in self.metrics}


def _pairs(cfg: InvarianceConfig) -> TransformPredictionConfig:
    """The transform-prediction options whose test pairs (and cache entries) this task reads."""
    return TransformPredictionConfig(
        transformation=cfg.transformation,
        options=cfg.options,
        n_test=cfg.n_test,
        image_size=cfg.image_size,
        context_ratio=cfg.context_ratio,
        feature=cfg.feature,
    )
