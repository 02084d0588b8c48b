"""End-to-end finetuning for classification (GTSA's iNaturalist-2019 evaluation).

The MAE / BEiT recipe of :mod:`eqbench.protocols.classification.finetune` on a copy of the
checkpoint's backbone (the loaded model is shared with the other tasks of a run and with the feature
cache, so it is never trained in place). Reports top-1 and top-5 on the test split after the last
epoch, and
beside them the trivial reference every classifier must beat: always predicting the most
frequent training class (``top1_majority``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, ClassVar

import numpy as np

from eqbench.data.base import DatasetSpec, load_dataset
from eqbench.errors import ConfigError
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol
from eqbench.protocols.classification import check_labelled_dataset
from eqbench.protocols.classification.finetune import FinetuneConfig, finetune

log = logging.getLogger(__name__)


def majority_top1(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Top-1 of predicting the most frequent training class (the lowest index among ties)."""
    majority = int(np.bincount(np.asarray(train_labels)).argmax())
    return float((np.asarray(test_labels) == majority).mean())


@PROTOCOLS.register("finetune")
class Finetune(Protocol):
    """Finetune the whole backbone with a new linear head (MAE / BEiT recipe); top-1 / top-5."""

    Config = FinetuneConfig
    metrics = ("top1", "top5", "top1_majority", "train_loss", "lr")
    units: ClassVar[dict[str, str]] = dict(
        top1="percent", top5="percent", top1_majority="percent", train_loss="score", lr="value"
    )
    lower_is_better = frozenset({"train_loss"})

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        cfg: FinetuneConfig = config
        check_labelled_dataset(dataset, seed, cfg.n_train, cfg.n_test)
        n_train = len(load_dataset(dataset, "train", n=cfg.n_train, seed=seed))
        if n_train < cfg.batch_size:
            raise ConfigError(
                f"Dataset '{dataset}' has {n_train} training images, fewer than one batch of "
                f"{cfg.batch_size} (batches are never partial). Lower batch_size or raise "
                "n_train."
            )

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: FinetuneConfig = config
        train = ctx.open("train", n=cfg.n_train)
        test = ctx.open("test", n=cfg.n_test)
        encoder = copy.deepcopy(ctx.model.encoder)
        result = finetune(
            encoder,
            train,
            test,
            cfg,
            device=ctx.store.device,
            seed=ctx.seed,
            show_progress=ctx.store.show_progress,
        )
        if cfg.lr is None:
            ctx.adjustments["lr"] = {
                "requested": None,
                "used": result.lr,
                "reason": f"blr {cfg.blr:g} x batch_size {cfg.batch_size} / 256 (MAE)",
            }
        if cfg.drop_path > 0 and not result.drop_path_applied:
            ctx.adjustments["drop_path"] = {
                "requested": cfg.drop_path,
                "used": 0.0,
                "reason": f"backbone '{encoder.arch}' has no ViT blocks to drop",
            }
        log.info(
            "finetune: top-1 %.4f top-5 %.4f in %.1fs", result.top1, result.top5, result.seconds
        )
        return {
            "top1": [result.top1],
            "top5": [result.top5],
            "top1_majority": [majority_top1(train.labels, test.labels)],
            "train_loss": [result.train_loss],
            "lr": [result.lr],
        }
