"""Classification: DINO's weighted kNN and the linear probes on frozen features (invariance), and
end-to-end finetuning.

kNN: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (arXiv 2104.14294),
``eval_knn.py``. Linear: the cheap variant on cached features (L-BFGS logistic regression with the
L2 strength swept on a validation split carved from the training data; Ericsson et al. 2021 and
dinov2's ``log_regression.py``). Linear SGD: dinov2's ``eval/linear.py`` grid of linear heads
(:mod:`eqbench.protocols.classification.linear_sgd`). Nothing is ever selected on the test split.

Finetune (GTSA's iNaturalist-2019 evaluation): the MAE / BEiT recipe of
:mod:`eqbench.protocols.classification.finetune` on a copy of the checkpoint's backbone (the loaded
model is shared with the other tasks of a run and with the feature cache, so it is never trained in
place). Reports top-1 and top-5 on the test split after the last epoch, and beside them the trivial
reference every classifier must beat: always predicting the most frequent training class
(``top1_majority``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from eqbench.backbones.base import FEATURE_KINDS
from eqbench.data.base import DatasetSpec, ImageDataset, load_dataset
from eqbench.errors import ConfigError, DatasetError
from eqbench.features.store import FeatureRequest, check_finite, select_feature
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol
from eqbench.protocols.classification import finetune
from eqbench.protocols.classification.knn import effective_ks, knn_classify
from eqbench.protocols.classification.linear import logistic_regression_probe
from eqbench.protocols.classification.linear_sgd import (
    DINOV2_LEARNING_RATES,
    DINOV2_N_LAST_BLOCKS,
    head_grid,
    linear_sgd_probe,
)
from eqbench.protocols.views import view_batches, view_key

logger = logging.getLogger(__name__)

FEATURES = ("auto", *FEATURE_KINDS)


def _check_common(image_size: int, feature: str, n_train: int | None, n_test: int | None) -> None:
    """The options both classification protocols share (raises ValueError, as dataclasses do)."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {', '.join(FEATURES)}, not {feature!r}")
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be >= 1 (or null for the whole split), got {n}")


@dataclass(frozen=True)
class KnnConfig:
    """Options of the kNN task (DINO defaults)."""

    image_size: int = 64
    feature: str = "auto"
    ks: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    temperature: float = 0.07
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        _check_common(self.image_size, self.feature, self.n_train, self.n_test)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be a non-empty list of integers >= 1, got {self.ks}")
        if not self.temperature > 0 or self.temperature == float("inf"):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")


@dataclass(frozen=True)
class LinearConfig:
    """Options of the linear-probe task."""

    image_size: int = 64
    feature: str = "auto"
    c_min_log10: float = -6.0
    c_max_log10: float = 5.0
    c_steps: int = 45
    val_fraction: float = 0.2
    max_iter: int = 1000
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        _check_common(self.image_size, self.feature, self.n_train, self.n_test)
        if not self.c_min_log10 <= self.c_max_log10:
            raise ValueError("need c_min_log10 <= c_max_log10")
        if self.c_steps < 1 or self.max_iter < 1:
            raise ValueError("c_steps and max_iter must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class LinearSgdConfig:
    """Options of the dinov2 linear-protocol task (grid and optimiser as dinov2's
    ``eval/linear.py``; ``epochs`` and ``batch_size`` sized for a CPU)."""

    image_size: int = 64
    n_last_blocks: list[int] = field(default_factory=lambda: list(DINOV2_N_LAST_BLOCKS))
    avgpool: list[bool] = field(default_factory=lambda: [False, True])
    learning_rates: list[float] = field(default_factory=lambda: list(DINOV2_LEARNING_RATES))
    epochs: int = 100
    batch_size: int = 128
    val_fraction: float = 0.2
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        _check_common(self.image_size, "auto", self.n_train, self.n_test)
        if not self.n_last_blocks or min(self.n_last_blocks) < 1:
            raise ValueError(f"n_last_blocks must be integers >= 1, got {self.n_last_blocks}")
        if len(set(self.n_last_blocks)) != len(self.n_last_blocks):
            raise ValueError(f"n_last_blocks has repeats: {self.n_last_blocks}")
        if not self.avgpool or len(set(self.avgpool)) != len(self.avgpool):
            raise ValueError(f"avgpool must list false and/or true once each, got {self.avgpool}")
        if not self.learning_rates or min(self.learning_rates) <= 0:
            raise ValueError(f"learning_rates must be positive numbers, got {self.learning_rates}")
        if len(set(self.learning_rates)) != len(self.learning_rates):
            raise ValueError(f"learning_rates has repeats: {self.learning_rates}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")


def split_request(ctx: EvalContext, split: str, n: int | None, image_size: int) -> FeatureRequest:
    """The images of a split resized to ``image_size``, as a feature-store request."""
    dataset = ctx.open(split, n=n)
    return FeatureRequest(
        dataset,
        view_key(image_size, image_size, None, ctx.seed),
        view_batches(dataset, image_size, image_size),
        label=f"{dataset.name}/{split}",
    )


def labelled_requests(
    ctx: EvalContext, n_train: int | None, n_test: int | None, image_size: int
) -> list[FeatureRequest]:
    """The train and test requests of :func:`labelled_splits`."""
    return [
        split_request(ctx, "train", n_train, image_size),
        split_request(ctx, "test", n_test, image_size),
    ]


def encode_split(
    ctx: EvalContext, split: str, n: int | None, image_size: int, feature: str
) -> tuple[np.ndarray, np.ndarray, ImageDataset]:
    """Features and labels of a split, images resized to ``image_size`` (cached)."""
    request = split_request(ctx, split, n, image_size)
    feats = ctx.store.fetch(request)
    return select_feature(feats, feature).numpy(), request.dataset.labels, request.dataset


def check_labelled_dataset(
    dataset: DatasetSpec, seed: int, n_train: int | None, n_test: int | None
) -> None:
    """Refuse data that cannot score classification: fewer than two classes in the train split
    (every prediction would be right), or test classes that never occur in train."""
    y_tr = load_dataset(dataset, "train", n=n_train, seed=seed).labels
    y_te = load_dataset(dataset, "test", n=n_test, seed=seed).labels
    for split, labels in (("train", y_tr), ("test", y_te)):
        if not np.issubdtype(np.asarray(labels).dtype, np.integer):
            raise DatasetError(
                f"Dataset '{dataset}' has non-integer labels in its {split} split. Labels must "
                "be class indices."
            )
    classes = np.unique(y_tr)
    if len(classes) < 2:
        raise DatasetError(
            f"Dataset '{dataset}' has {len(classes)} class in its train split"
            f"{' (as subsampled by n_train)' if n_train is not None else ''}; classification "
            "needs at least two. Add classes or raise n_train."
        )
    unseen = set(np.unique(y_te)) - set(classes)
    if unseen:
        raise DatasetError(
            f"Dataset '{dataset}' has test classes that never occur in its train split "
            f"({len(unseen)} of them), so it cannot score classification. Use a labelled "
            "dataset such as digits, cifar10 or imagefolder:PATH."
        )


def labelled_splits(
    ctx: EvalContext, n_train: int | None, n_test: int | None, image_size: int, feature: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Train and test features and labels; refuses data whose test classes never occur in train."""
    x_tr, y_tr, ds_tr = encode_split(ctx, "train", n_train, image_size, feature)
    x_te, y_te, _ = encode_split(ctx, "test", n_test, image_size, feature)
    unseen = set(np.unique(y_te)) - set(np.unique(y_tr))
    if unseen:
        raise DatasetError(
            f"Dataset '{ctx.dataset}' has test classes that never occur in its train split "
            f"({len(unseen)} of them), so it cannot score classification. Use a labelled "
            "dataset such as digits, cifar10 or imagefolder:PATH."
        )
    return x_tr, y_tr, x_te, y_te, len(ds_tr.classes)


class _LabelledFeatures(Protocol):
    """A protocol on the frozen features of a labelled dataset's train and test splits
    (:func:`labelled_splits`); its config has ``n_train``, ``n_test`` and ``image_size``."""

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        check_labelled_dataset(dataset, seed, config.n_train, config.n_test)

    def feature_requests(self, config: Any, ctx: EvalContext) -> list[FeatureRequest]:
        return labelled_requests(ctx, config.n_train, config.n_test, config.image_size)


@PROTOCOLS.register("knn")
class Knn(_LabelledFeatures):
    """DINO's temperature-weighted kNN vote on L2-normalised frozen features.

    Runs on the evaluation device (``--device``), in bounded memory
    (:mod:`eqbench.protocols.classification.knn`). A ``k`` above the number of training samples is
    capped, and the change is recorded in the result's ``adjustments``.
    """

    Config = KnnConfig
    metrics = ("top1_k10", "top1_k20", "top1_k100", "top1_k200", "top5_k20")
    units = dict.fromkeys(metrics, "percent")

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        cfg: KnnConfig = config
        reported = [f"top{t}_k{k}" for k in cfg.ks for t in (1, 5)]
        if primary_metric not in reported:
            raise ConfigError(
                f"ks={list(cfg.ks)} does not report the task's primary metric "
                f"'{primary_metric}'. Keep its k in ks."
            )
        super().preflight(config, dataset, seed, primary_metric)

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: KnnConfig = config
        x_tr, y_tr, x_te, y_te, num_classes = labelled_splits(
            ctx, cfg.n_train, cfg.n_test, cfg.image_size, cfg.feature
        )
        used = effective_ks(cfg.ks, len(y_tr))
        if used != list(cfg.ks):
            reason = (
                f"k capped at the {len(y_tr)} training samples; metric names keep the requested k"
            )
            ctx.adjustments["ks"] = {"requested": list(cfg.ks), "used": used, "reason": reason}
            logger.warning("task kNN: ks %s -> %s (%s)", list(cfg.ks), used, reason)
        res = knn_classify(
            x_tr,
            y_tr,
            x_te,
            y_te,
            ks=tuple(cfg.ks),
            temperature=cfg.temperature,
            num_classes=num_classes,
            device=ctx.store.device,
        )
        return {k: [float(v)] for k, v in res.items()}


@PROTOCOLS.register("linear")
class Linear(_LabelledFeatures):
    """Logistic regression on frozen features, L2 strength chosen on a validation split."""

    Config = LinearConfig
    metrics = ("top1", "top5", "val_top1", "best_c")
    units: ClassVar[dict[str, str]] = dict(
        top1="percent", top5="percent", val_top1="percent", best_c="value"
    )

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: LinearConfig = config
        x_tr, y_tr, x_te, y_te, _ = labelled_splits(
            ctx, cfg.n_train, cfg.n_test, cfg.image_size, cfg.feature
        )
        res = logistic_regression_probe(
            x_tr,
            y_tr,
            x_te,
            y_te,
            c_grid=np.logspace(cfg.c_min_log10, cfg.c_max_log10, cfg.c_steps).tolist(),
            val_fraction=cfg.val_fraction,
            seed=ctx.seed,
            max_iter=cfg.max_iter,
        )
        return {k: [float(res[k])] for k in self.metrics}


@PROTOCOLS.register("linear_sgd")
class LinearSgd(Protocol):
    """dinov2's linear protocol: a grid of linear heads (learning rate × last 1 or 4 blocks ×
    CLS or CLS + mean patch token) trained together with SGD on frozen features, the best on a
    validation split carved from train scored on test
    (:mod:`eqbench.protocols.classification.linear_sgd`).

    A backbone with fewer blocks than an ``n_last_blocks`` entry (CNNs and raw pixels have one)
    reads all it has; the change is recorded in the result's ``adjustments``. The selected
    head's hyper-parameters are metrics (``best_lr`` before the batch-size scaling,
    ``best_n_last_blocks``, ``best_avgpool`` 0/1).
    """

    Config = LinearSgdConfig
    metrics = ("top1", "top5", "val_top1", "best_lr", "best_n_last_blocks", "best_avgpool")
    units: ClassVar[dict[str, str]] = dict(
        top1="percent",
        top5="percent",
        val_top1="percent",
        best_lr="value",
        best_n_last_blocks="value",
        best_avgpool="value",
    )

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        cfg: LinearSgdConfig = config
        check_labelled_dataset(dataset, seed, cfg.n_train, cfg.n_test)

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: LinearSgdConfig = config
        depth = ctx.store.encoder.block_count()
        used = list(dict.fromkeys(min(n, depth) for n in cfg.n_last_blocks))
        if used != list(cfg.n_last_blocks):
            reason = f"the backbone has {depth} block(s) to read"
            ctx.adjustments["n_last_blocks"] = {
                "requested": list(cfg.n_last_blocks),
                "used": used,
                "reason": reason,
            }
            logger.warning(
                "task linear_sgd: n_last_blocks %s -> %s (%s)", cfg.n_last_blocks, used, reason
            )
        blocks = max(used)
        feats = {}
        datasets = {}
        for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
            request = split_request(ctx, split, n, cfg.image_size)
            feats[split] = ctx.store.last_blocks(request, blocks)
            datasets[split] = request.dataset
            for name, tensor in feats[split].items():
                check_finite(tensor, name)
        y_tr, y_te = datasets["train"].labels, datasets["test"].labels
        unseen = set(np.unique(y_te)) - set(np.unique(y_tr))
        if unseen:
            raise DatasetError(
                f"Dataset '{ctx.dataset}' has test classes that never occur in its train split "
                f"({len(unseen)} of them), so it cannot score classification."
            )
        res = linear_sgd_probe(
            feats["train"]["cls_blocks"],
            feats["train"]["avgpool"],
            y_tr,
            feats["test"]["cls_blocks"],
            feats["test"]["avgpool"],
            y_te,
            num_classes=len(datasets["train"].classes),
            heads=head_grid(used, cfg.avgpool, cfg.learning_rates),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            val_fraction=cfg.val_fraction,
            seed=ctx.seed,
        )
        return {
            "top1": [res.top1],
            "top5": [res.top5],
            "val_top1": [res.val_top1],
            "best_lr": [res.head.lr],
            "best_n_last_blocks": [float(res.head.n_blocks)],
            "best_avgpool": [float(res.head.avgpool)],
        }


def majority_top1(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Top-1 of predicting the most frequent training class (the lowest index among ties)."""
    majority = int(np.bincount(np.asarray(train_labels)).argmax())
    return float((np.asarray(test_labels) == majority).mean())


@PROTOCOLS.register("finetune")
class Finetune(Protocol):
    """Finetune the whole backbone with a new linear head (MAE / BEiT recipe); top-1 / top-5."""

    Config = finetune.FinetuneConfig
    metrics = ("top1", "top5", "top1_majority", "train_loss", "lr")
    units: ClassVar[dict[str, str]] = dict(
        top1="percent", top5="percent", top1_majority="percent", train_loss="score", lr="value"
    )
    lower_is_better = frozenset({"train_loss"})

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        cfg: finetune.FinetuneConfig = config
        check_labelled_dataset(dataset, seed, cfg.n_train, cfg.n_test)
        n_train = len(load_dataset(dataset, "train", n=cfg.n_train, seed=seed))
        if n_train < cfg.batch_size:
            raise ConfigError(
                f"Dataset '{dataset}' has {n_train} training images, fewer than one batch of "
                f"{cfg.batch_size} (batches are never partial). Lower batch_size or raise "
                "n_train."
            )

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: finetune.FinetuneConfig = config
        train = ctx.open("train", n=cfg.n_train)
        test = ctx.open("test", n=cfg.n_test)
        encoder = copy.deepcopy(ctx.model.encoder)
        result = finetune.finetune(
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
        logger.info(
            "finetune: top-1 %.4f top-5 %.4f in %.1fs", result.top1, result.top5, result.seconds
        )
        return {
            "top1": [result.top1],
            "top5": [result.top5],
            "top1_majority": [majority_top1(train.labels, test.labels)],
            "train_loss": [result.train_loss],
            "lr": [result.lr],
        }
