"""Synthetic transform-prediction probes (equivariance).

Wang, Quercia, Bruns, Morrison, Scharr, Krajsek (AAAI-26, arXiv 2503.18753, Table 1), after Wang,
Krajsek, Scharr (arXiv 2412.03314): apply ``g_θ`` to an image ``I``, encode ``I`` and ``g_θ(I)``
with the frozen encoder, and train a light probe on the pair of features to recover θ; score R² on
held-out images (train and test share no source image). Discrete groups (four-fold rotation, flip)
are scored by accuracy. Each probe runs once per probe seed; a ridge / logistic-regression variant
is reported beside the MLP, because a small MLP on few pairs can overfit to a negative R².
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from eqbench.errors import ConfigError
from eqbench.features.store import FeatureRequest, check_feature, select_feature
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol, generator
from eqbench.protocols.transform_prediction.probes import (
    ProbeConfig,
    ProbeKind,
    fit_classification,
    fit_regression,
)
from eqbench.protocols.views import context_size, view_batches, view_key
from eqbench.transforms import Transformation, build_transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransformPredictionConfig:
    """Options of a transform-prediction task.

    Attributes:
        transformation: registered transformation name (``eqbench ls transforms``).
        options: its ranges, e.g. ``{degrees: [-45, 45]}``.
        n_train / n_test: number of image pairs per split (synthetic pairs are free).
        image_size: side of the views fed to the encoder.
        context_ratio: context side / view side; views are cut from the transformed context.
        feature: ``auto`` (default: the feature an eqbench checkpoint's method trained, else
            ``cls``; resolved before the task runs), ``cls``, ``avgpool``, ``cls+avgpool`` or
            ``grid`` (the patch-token map pooled to 2×2 cells, flattened).
        input: ``pair`` (concat f(I), f(g I)) or ``transformed`` (f(g I) alone: absolute variant).
        probe_seeds: number of probe seeds; metrics are mean ± std over them.
        hidden: MLP hidden widths.
        max_epochs / patience / val_fraction: MLP training and early stopping on a validation
            split carved from the training pairs.
    """

    transformation: str
    options: dict[str, Any] = field(default_factory=dict)
    n_train: int = 10000
    n_test: int = 2000
    image_size: int = 64
    context_ratio: float = 2.0
    feature: str = "auto"
    input: str = "pair"
    probe_seeds: int = 3
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    max_epochs: int = 200
    patience: int = 10
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        check_feature(self.feature, "transform-prediction task")
        if self.input not in ("pair", "transformed"):
            raise ValueError(f"input must be pair or transformed, not {self.input!r}")
        if self.n_train < 10 or self.n_test < 10:
            raise ValueError("n_train and n_test must be at least 10")
        if self.probe_seeds < 1:
            raise ValueError("probe_seeds must be at least 1")


def pair_requests(
    cfg: TransformPredictionConfig, ctx: EvalContext, split: str, n: int
) -> tuple[FeatureRequest, FeatureRequest, torch.Tensor, Transformation]:
    """The views ``I`` and ``g_θ I`` of ``n`` images of ``split`` as feature-store requests.

    Returns:
        ``(identity request, transformed request, params (n, P), transformation)``; θ is
        sampled from a generator seeded by the data seed and split, so every call (and every
        process) gets the same.
    """
    transform = build_transform(cfg.transformation, cfg.image_size, **cfg.options)
    context = context_size(cfg.image_size, cfg.context_ratio, [transform])
    dataset = ctx.open(split, n=n)
    params = transform.sample(len(dataset), generator(ctx.seed, split, transform.name, "params"))
    identity = FeatureRequest(
        dataset,
        view_key(cfg.image_size, context, None, ctx.seed),
        view_batches(dataset, cfg.image_size, context),
        label=f"{dataset.name}/{split} identity",
    )
    transformed = FeatureRequest(
        dataset,
        view_key(cfg.image_size, context, transform, ctx.seed),
        view_batches(dataset, cfg.image_size, context, transform, params),
        extra={"params": params},
        label=f"{dataset.name}/{split} {transform.name}",
    )
    return identity, transformed, params, transform


def encode_pairs(
    cfg: TransformPredictionConfig, ctx: EvalContext, split: str, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Transformation]:
    """Features of ``I`` and ``g_θ I`` for ``n`` images of ``split``, and θ.

    Shared with the invariance protocol, so both read the same cache entries.

    Returns:
        ``(f_identity (n, D), f_transformed (n, D), params (n, P), transformation)``.
    """
    identity, transformed, params, transform = pair_requests(cfg, ctx, split, n)
    f_id = ctx.store.fetch(identity)
    f_tr = ctx.store.fetch(transformed)
    if not torch.equal(f_tr["params"], params):
        raise ConfigError(
            "Cached transformation parameters differ from the ones sampled now; the feature "
            "cache is stale. Delete the cache folder (--cache-dir) and run again."
        )
    return (
        select_feature(f_id, cfg.feature),
        select_feature(f_tr, cfg.feature),
        params,
        transform,
    )


@PROTOCOLS.register("transform_prediction")
class TransformPrediction(Protocol):
    """Regress (or classify) θ from the features of ``(I, g_θ I)``."""

    Config = TransformPredictionConfig
    metrics = ("r2_mlp", "r2_linear", "acc_mlp", "acc_linear", "chance")
    units: ClassVar[dict[str, str]] = dict(
        r2_mlp="r2", r2_linear="r2", acc_mlp="percent", acc_linear="percent", chance="percent"
    )

    def feature_requests(self, config: Any, ctx: EvalContext) -> list[FeatureRequest]:
        cfg: TransformPredictionConfig = config
        train = pair_requests(cfg, ctx, "train", cfg.n_train)
        test = pair_requests(cfg, ctx, "test", cfg.n_test)
        return [train[0], train[1], test[0], test[1]]

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: TransformPredictionConfig = config
        tr_id, tr_g, tr_p, transform = encode_pairs(cfg, ctx, "train", cfg.n_train)
        te_id, te_g, te_p, _ = encode_pairs(cfg, ctx, "test", cfg.n_test)
        if cfg.input == "pair":
            x_train = torch.cat([tr_id, tr_g], dim=1).numpy()
            x_test = torch.cat([te_id, te_g], dim=1).numpy()
        else:
            x_train, x_test = tr_g.numpy(), te_g.numpy()
        y_train = transform.target(tr_p).numpy()
        y_test = transform.target(te_p).numpy()
        probe = ProbeConfig(
            hidden=tuple(cfg.hidden),
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            val_fraction=cfg.val_fraction,
        )
        out: MetricValues = {}
        seeds = [ctx.seed + i for i in range(cfg.probe_seeds)]
        kinds: tuple[ProbeKind, ProbeKind] = ("mlp", "linear")
        if transform.discrete:
            labels_train, labels_test = y_train[:, 0].astype(int), y_test[:, 0].astype(int)
            for kind in kinds:
                # one logistic-regression fit stands for every seed (it barely depends on it)
                for seed in seeds if kind == "mlp" else seeds[:1]:
                    res = fit_classification(
                        x_train,
                        labels_train,
                        x_test,
                        labels_test,
                        kind=kind,
                        seed=seed,
                        config=probe,
                    )
                    out.setdefault(f"acc_{kind}", []).append(float(res["accuracy"]))
            out["chance"] = [float(res["chance"])]
        else:
            for kind in kinds:
                # the ridge probe is deterministic: one fit stands for every seed
                for seed in seeds if kind == "mlp" else seeds[:1]:
                    reg = fit_regression(
                        x_train, y_train, x_test, y_test, kind=kind, seed=seed, config=probe
                    )
                    r2 = reg["r2"]
                    assert isinstance(r2, float)
                    out.setdefault(f"r2_{kind}", []).append(r2)
        return out
