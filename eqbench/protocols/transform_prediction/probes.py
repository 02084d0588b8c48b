"""Transformation-prediction probes: how much of a transformation can be read off the features.

Following Wang, Krajsek & Scharr (arXiv 2412.03314, 2024) and Wang et al. (AAAI-26), a probe is
trained on frozen features to predict the parameters of the transformation that was applied
(regression, scored by R²) or its class (classification, scored by accuracy). Two probe families
are offered: a two-hidden-layer MLP (the papers' probe) and a linear model (ridge regression or
multinomial logistic regression), all from scikit-learn.

Protocol, identical for every encoder:

* inputs are standardised with the training mean and standard deviation (scikit-learn's
  :class:`~sklearn.preprocessing.StandardScaler`, which maps (near-)constant features to 0 instead
  of dividing by zero); regression targets likewise, and predictions are mapped back to natural
  units — R² is invariant to that per-dimension affine map;
* every choice (MLP early-stopping epoch, ridge ``alpha``, logistic ``C``) is made on the training
  split (a validation part carved out of it, or ridge's leave-one-out error); the test split is
  only ever predicted;
* R² is ``1 − RSS/TSS`` per target dimension on the test split (:func:`sklearn.metrics.r2_score`),
  averaged uniformly over dimensions. A constant prediction scores ≤ 0, so an encoder whose output
  is constant gets ``r2 ≤ 0`` and majority-class accuracy.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

from eqbench.protocols.classification.linear import fit_logistic_probe

logger = logging.getLogger(__name__)

ProbeKind = Literal["mlp", "linear"]


def _logspace(start: float, stop: float, num: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.logspace(start, stop, num))


@dataclass(frozen=True)
class ProbeConfig:
    """Hyper-parameters of the probes (shared by every encoder, never tuned on test data).

    Attributes:
        hidden: MLP hidden-layer widths.
        max_epochs: MLP epoch cap (scikit-learn ``max_iter``).
        patience: MLP early stopping: epochs without a validation improvement of ``1e-4``
            (scikit-learn ``n_iter_no_change``, default ``tol``) before stopping; the weights of
            the best validation epoch are kept.
        val_fraction: fraction of the training split held out for early stopping (MLP) and for
            choosing ``C`` (logistic regression).
        learning_rate: Adam learning rate of the MLP.
        batch_size: MLP minibatch size.
        l2: MLP L2 penalty (scikit-learn ``alpha``; its default).
        ridge_alphas: ridge penalties, chosen by efficient leave-one-out CV on the training split.
        logistic_cs: inverse regularisation strengths swept for logistic regression (large C
            on separable features only slows L-BFGS down without changing the accuracy).
        logistic_max_iter: L-BFGS iteration cap of each logistic-regression fit.
    """

    hidden: tuple[int, ...] = (512, 512)
    max_epochs: int = 200
    patience: int = 10
    val_fraction: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 256
    l2: float = 1e-4
    ridge_alphas: tuple[float, ...] = field(default_factory=lambda: _logspace(-3, 5, 17))
    logistic_cs: tuple[float, ...] = field(default_factory=lambda: _logspace(-4, 2, 7))
    logistic_max_iter: int = 300


def _check_xy(x: NDArray[Any], y: NDArray[Any], name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} features must be 2-D (n, d), got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name} features and targets disagree: {len(x)} vs {len(y)} rows")


def _as_2d(y: npt.ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"regression targets must be (n,) or (n, k), got shape {arr.shape}")
    return arr


def _mlp_kwargs(config: ProbeConfig, seed: int) -> dict[str, Any]:
    return {
        "hidden_layer_sizes": config.hidden,
        "alpha": config.l2,
        "batch_size": config.batch_size,
        "learning_rate_init": config.learning_rate,
        "max_iter": config.max_epochs,
        "early_stopping": True,
        "validation_fraction": config.val_fraction,
        "n_iter_no_change": config.patience,
        "random_state": seed,
    }


def _fit_quietly(model: Any, x: NDArray[Any], y: NDArray[Any]) -> None:
    """Fit ``model``, logging (not raising) scikit-learn's convergence warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.info("%s stopped at its iteration cap before converging", type(model).__name__)


def fit_predict_regression(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    *,
    kind: ProbeKind,
    seed: int,
    config: ProbeConfig | None = None,
) -> tuple[dict[str, float | list[float]], NDArray[np.float64]]:
    """Fit a regression probe on the training split and score it on the test split.

    Args:
        x_train: training features ``(n_train, d)``.
        y_train: training targets ``(n_train,)`` or ``(n_train, k)``.
        x_test: test features ``(n_test, d)``, ``n_test >= 2``.
        y_test: test targets ``(n_test,)`` or ``(n_test, k)``.
        kind: ``"mlp"`` (:class:`~sklearn.neural_network.MLPRegressor`, float32, Adam, early
            stopping on a validation part of the training split) or ``"linear"``
            (:class:`~sklearn.linear_model.RidgeCV`; one ``alpha`` for all standardised targets,
            chosen by leave-one-out error on the training split).
        seed: seeds the MLP's initialisation, shuffling and validation split.
        config: probe hyper-parameters (defaults: :class:`ProbeConfig`).

    Returns:
        ``(metrics, predictions)``. ``metrics`` has ``r2`` (uniform mean over target dimensions),
        ``r2_per_dim`` (list of ``k`` floats), and ``alpha`` (linear) or ``epochs`` and
        ``best_val_r2`` (MLP). ``predictions`` are the test predictions ``(n_test, k)`` in the
        targets' units, so that ``r2 == sklearn.metrics.r2_score(y_test, predictions)``.
    """
    config = config or ProbeConfig()
    xtr, xte = np.asarray(x_train), np.asarray(x_test)
    ytr, yte = _as_2d(y_train), _as_2d(y_test)
    _check_xy(xtr, ytr, "training")
    _check_xy(xte, yte, "test")
    if ytr.shape[1] != yte.shape[1]:
        raise ValueError(f"target dimensions differ: {ytr.shape[1]} (train) vs {yte.shape[1]}")
    if len(xte) < 2:
        raise ValueError("R² needs at least two test samples")

    start = time.perf_counter()
    x_scaler = StandardScaler().fit(xtr)
    y_scaler = StandardScaler().fit(ytr)
    ytr_s = y_scaler.transform(ytr)
    metrics: dict[str, float | list[float]] = {}
    if kind == "mlp":
        mlp = MLPRegressor(**_mlp_kwargs(config, seed))
        target = ytr_s.astype(np.float32)
        if target.shape[1] == 1:
            target = target.ravel()  # a 1-D target keeps MLPRegressor in single-output mode
        _fit_quietly(mlp, x_scaler.transform(xtr).astype(np.float32), target)
        pred_s = mlp.predict(x_scaler.transform(xte).astype(np.float32))
        metrics["epochs"] = float(mlp.n_iter_)
        metrics["best_val_r2"] = float(mlp.best_validation_score_)
    elif kind == "linear":
        ridge = RidgeCV(alphas=config.ridge_alphas)
        ridge.fit(x_scaler.transform(xtr).astype(np.float64), ytr_s)
        pred_s = ridge.predict(x_scaler.transform(xte).astype(np.float64))
        metrics["alpha"] = float(ridge.alpha_)
    else:
        raise ValueError(f"unknown probe kind {kind!r}; expected 'mlp' or 'linear'")

    pred = y_scaler.inverse_transform(np.asarray(pred_s, dtype=np.float64).reshape(len(xte), -1))
    per_dim = np.asarray(r2_score(yte, pred, multioutput="raw_values"), dtype=np.float64)
    metrics["r2"] = float(per_dim.mean())
    metrics["r2_per_dim"] = [float(v) for v in per_dim]
    logger.debug(
        "%s regression probe: n_train=%d d=%d k=%d r2=%.4f in %.1fs",
        kind,
        xtr.shape[0],
        xtr.shape[1],
        ytr.shape[1],
        metrics["r2"],
        time.perf_counter() - start,
    )
    return metrics, pred


def fit_regression(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    *,
    kind: ProbeKind,
    seed: int,
    config: ProbeConfig | None = None,
) -> dict[str, float | list[float]]:
    """Metrics of :func:`fit_predict_regression` (same arguments), without the predictions."""
    metrics, _ = fit_predict_regression(
        x_train, y_train, x_test, y_test, kind=kind, seed=seed, config=config
    )
    return metrics


def fit_predict_classification(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    *,
    kind: ProbeKind,
    seed: int,
    config: ProbeConfig | None = None,
) -> tuple[dict[str, float], NDArray[Any]]:
    """Fit a classification probe on the training split and score it on the test split.

    Args:
        x_train: training features ``(n_train, d)``.
        y_train: training labels ``(n_train,)``, at least two classes.
        x_test: test features ``(n_test, d)``.
        y_test: test labels ``(n_test,)``.
        kind: ``"mlp"`` (:class:`~sklearn.neural_network.MLPClassifier`, float32, early stopping
            on a stratified validation part of the training split) or ``"linear"``
            (multinomial logistic regression, L-BFGS, ``max_iter=1000``, ``C`` from
            ``config.logistic_cs`` chosen on a stratified, seeded validation split of the training
            split and refitted on all of it;
            :func:`eqbench.protocols.classification.linear.fit_logistic_probe`).
        seed: seeds the MLP's initialisation and shuffling, and the validation split.
        config: probe hyper-parameters (defaults: :class:`ProbeConfig`).

    Returns:
        ``(metrics, predictions)``: ``metrics`` has ``accuracy`` on the test split, ``chance`` (the
        training frequency of the most common training class: what always predicting it scores on
        an identically distributed test split), and ``best_c``/``val_accuracy`` (linear) or
        ``epochs``/``best_val_accuracy`` (MLP); ``predictions`` are the test predictions
        ``(n_test,)``.
    """
    config = config or ProbeConfig()
    xtr, xte = np.asarray(x_train), np.asarray(x_test)
    ytr, yte = np.asarray(y_train), np.asarray(y_test)
    _check_xy(xtr, ytr, "training")
    _check_xy(xte, yte, "test")
    if ytr.ndim != 1 or yte.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shapes {ytr.shape} and {yte.shape}")
    _, counts = np.unique(ytr, return_counts=True)
    if len(counts) < 2:
        raise ValueError("a classification probe needs at least two classes in the training split")

    start = time.perf_counter()
    metrics: dict[str, float] = {"chance": float(counts.max() / counts.sum())}
    if kind == "mlp":
        scaler = StandardScaler().fit(xtr)
        mlp = MLPClassifier(**_mlp_kwargs(config, seed))
        _fit_quietly(mlp, scaler.transform(xtr).astype(np.float32), ytr)
        pred: NDArray[Any] = mlp.predict(scaler.transform(xte).astype(np.float32))
        metrics["epochs"] = float(mlp.n_iter_)
        metrics["best_val_accuracy"] = float(mlp.best_validation_score_)
    elif kind == "linear":
        probe = fit_logistic_probe(
            xtr,
            ytr,
            c_grid=config.logistic_cs,
            val_fraction=config.val_fraction,
            seed=seed,
            max_iter=config.logistic_max_iter,
        )
        pred = probe.predict(xte)
        metrics["best_c"] = probe.best_c
        metrics["val_accuracy"] = probe.val_top1
    else:
        raise ValueError(f"unknown probe kind {kind!r}; expected 'mlp' or 'linear'")

    metrics["accuracy"] = float(np.mean(pred == yte))
    logger.debug(
        "%s classification probe: n_train=%d d=%d accuracy=%.4f (chance %.4f) in %.1fs",
        kind,
        xtr.shape[0],
        xtr.shape[1],
        metrics["accuracy"],
        metrics["chance"],
        time.perf_counter() - start,
    )
    return metrics, pred


def fit_classification(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    *,
    kind: ProbeKind,
    seed: int,
    config: ProbeConfig | None = None,
) -> dict[str, float]:
    """Metrics of :func:`fit_predict_classification` (same arguments), without the predictions."""
    metrics, _ = fit_predict_classification(
        x_train, y_train, x_test, y_test, kind=kind, seed=seed, config=config
    )
    return metrics
