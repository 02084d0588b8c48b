"""Cheap linear probe on cached features: multinomial logistic regression with a C sweep.

The protocol follows the "linear evaluation on frozen features" of Ericsson et al., *How well do
self-supervised models transfer?* (CVPR 2021, which in turn follows Kornblith et al. 2019) and
DINOv2's ``dinov2/eval/log_regression.py``: features are standardised, the inverse regularisation
strength ``C`` of an L2-regularised multinomial logistic regression (L-BFGS) is chosen on a
validation split carved out of the training set, the model is refitted on the whole training set
with the chosen ``C`` and evaluated once on the test set. The default grid ``np.logspace(-6, 5,
45)`` is DINOv2's ``C_POWER_RANGE = torch.linspace(-6, 5, 45)``.

The test split never influences any choice: the scaler is fitted on the training features, ``C`` is
selected on the validation part of the training split, and the test features are only ever passed
to ``predict_proba`` of the final model.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

DEFAULT_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 5, 45))
"""DINOv2's sweep: 45 values of ``C`` log-spaced between 1e-6 and 1e5."""


@dataclass(frozen=True)
class LogisticProbe:
    """A fitted logistic-regression probe and the record of how its ``C`` was chosen.

    Attributes:
        scaler: standardiser fitted on the training features.
        model: logistic regression refitted on all (standardised) training features.
        best_c: the selected inverse regularisation strength.
        val_top1: validation top-1 accuracy of ``best_c`` during the sweep (fraction 0–1).
        c_grid: the swept values of ``C``, ascending.
        val_scores: validation top-1 accuracy for each value of ``c_grid``.
    """

    scaler: StandardScaler
    model: LogisticRegression
    best_c: float
    val_top1: float
    c_grid: tuple[float, ...]
    val_scores: tuple[float, ...]

    @property
    def classes(self) -> NDArray[Any]:
        """The class labels seen in training, ``(n_classes,)``, in ``predict_proba`` order."""
        classes: NDArray[Any] = self.model.classes_
        return classes

    def predict_proba(self, x: npt.ArrayLike) -> NDArray[np.float64]:
        """Class probabilities ``(n, n_classes)`` for features ``x`` ``(n, d)``."""
        proba: NDArray[np.float64] = self.model.predict_proba(self.scaler.transform(x))
        return proba

    def predict(self, x: npt.ArrayLike) -> NDArray[Any]:
        """Predicted labels ``(n,)`` for features ``x`` ``(n, d)``."""
        labels: NDArray[Any] = self.model.predict(self.scaler.transform(x))
        return labels


def split_train_val(
    labels: NDArray[Any], val_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Seeded, stratified split of indices ``0..n-1`` into (train, validation) parts.

    Falls back to an unstratified split (with a warning) when stratification is impossible, e.g.
    when a class has a single member or there are fewer validation slots than classes.

    Args:
        labels: class labels ``(n,)``.
        val_fraction: fraction of samples that go to the validation part, in (0, 1).
        seed: random seed of the split.

    Returns:
        Index arrays ``(n_fit,)`` and ``(n_val,)``, both non-empty.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(labels)
    if n < 2:
        raise ValueError(f"need at least 2 training samples to carve a validation split, got {n}")
    indices = np.arange(n)
    try:
        fit_idx, val_idx = train_test_split(
            indices, test_size=val_fraction, random_state=seed, stratify=labels
        )
    except ValueError as exc:
        logger.warning("stratified validation split impossible (%s); using a random split", exc)
        fit_idx, val_idx = train_test_split(indices, test_size=val_fraction, random_state=seed)
    return np.asarray(fit_idx, dtype=np.intp), np.asarray(val_idx, dtype=np.intp)


def topk_accuracy(
    proba: NDArray[np.floating[Any]], classes: NDArray[Any], labels: NDArray[Any], k: int
) -> float:
    """Fraction of samples whose true label is among the ``k`` most probable classes.

    Ties are broken towards the class listed first in ``classes`` (stable sort). With fewer than
    ``k`` classes every class counts, so the score is the fraction of labels seen in training.

    Args:
        proba: scores ``(n, n_classes)``, columns in the order of ``classes``.
        classes: class labels ``(n_classes,)``.
        labels: true labels ``(n,)``; labels absent from ``classes`` are never correct.
        k: how many top classes count.
    """
    k = min(k, proba.shape[1])
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    hits = (classes[order] == np.asarray(labels)[:, None]).any(axis=1)
    return float(hits.mean())


def fit_logistic_probe(
    train_x: npt.ArrayLike,
    train_y: npt.ArrayLike,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
) -> LogisticProbe:
    """Standardise, choose ``C`` on a validation split of the training set, refit on all of it.

    The sweep visits ``C`` in ascending order and warm-starts L-BFGS from the previous solution
    (the strongly regularised fits converge in a few iterations and are good starting points for
    the weaker ones), which is what keeps a 45-value sweep cheap. Among equally good values the
    smallest ``C`` (strongest regularisation) wins. Non-convergence warnings, expected for very
    large ``C`` on separable data, are counted and logged rather than raised.

    Args:
        train_x: training features ``(n, d)``.
        train_y: training labels ``(n,)`` (any hashable labels), at least two classes.
        c_grid: values of ``C`` to sweep.
        val_fraction: fraction of the training set held out to choose ``C``.
        seed: seed of the (stratified) validation split.
        max_iter: L-BFGS iteration cap per fit.

    Returns:
        The fitted :class:`LogisticProbe`.
    """
    x = np.asarray(train_x)
    y = np.asarray(train_y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"expected features (n, d) and labels (n,), got {x.shape} and {y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError("logistic regression needs at least two classes in the training labels")
    grid = tuple(sorted(float(c) for c in c_grid))
    if not grid or grid[0] <= 0:
        raise ValueError(f"c_grid must be non-empty and positive, got {c_grid}")

    start = time.perf_counter()
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    fit_idx, val_idx = split_train_val(y, val_fraction, seed)

    model = LogisticRegression(C=grid[0], max_iter=max_iter, warm_start=True)
    scores: list[float] = []
    best_model = model
    n_unconverged = 0
    for c in grid:
        model.set_params(C=c)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(xs[fit_idx], y[fit_idx])
        n_unconverged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        scores.append(float(model.score(xs[val_idx], y[val_idx])))
        if len(scores) == 1 or scores[-1] > max(scores[:-1]):
            best_model = copy.deepcopy(model)
    best = int(np.argmax(scores))  # first maximum: the smallest C among ties
    best_c = grid[best]

    # Refit on all training data, warm-started from the sweep's solution when the classes match.
    if np.array_equal(best_model.classes_, np.unique(y)):
        final = best_model
    else:
        final = LogisticRegression(C=best_c, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        final.fit(xs, y)
    n_unconverged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    if n_unconverged:
        logger.info("%d of %d L-BFGS fits hit max_iter=%d", n_unconverged, len(grid) + 1, max_iter)
    logger.debug(
        "logistic probe: n=%d d=%d best C=%.3g val top-1=%.4f in %.1fs",
        x.shape[0],
        x.shape[1],
        best_c,
        scores[best],
        time.perf_counter() - start,
    )
    return LogisticProbe(
        scaler=scaler,
        model=final,
        best_c=best_c,
        val_top1=scores[best],
        c_grid=grid,
        val_scores=tuple(scores),
    )


def logistic_regression_probe(
    train_x: npt.ArrayLike,
    train_y: npt.ArrayLike,
    test_x: npt.ArrayLike,
    test_y: npt.ArrayLike,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Linear-probe classification accuracy of frozen features (see :func:`fit_logistic_probe`).

    Args:
        train_x: training features ``(n_train, d)``.
        train_y: training labels ``(n_train,)``.
        test_x: test features ``(n_test, d)``.
        test_y: test labels ``(n_test,)``.
        c_grid: values of ``C`` to sweep (pass a coarser grid, e.g. ``np.logspace(-6, 5, 12)``, to
            trade selection resolution for speed).
        val_fraction: fraction of the training set held out to choose ``C``.
        seed: seed of the validation split.
        max_iter: L-BFGS iteration cap per fit.

    Returns:
        ``top1`` and ``top5`` test accuracy (fractions 0–1; with fewer than five classes ``top5``
        counts every class), ``best_c`` and the validation accuracy ``val_top1`` of ``best_c``.
    """
    probe = fit_logistic_probe(
        train_x, train_y, c_grid=c_grid, val_fraction=val_fraction, seed=seed, max_iter=max_iter
    )
    y_test = np.asarray(test_y)
    proba = probe.predict_proba(test_x)
    return {
        "top1": topk_accuracy(proba, probe.classes, y_test, 1),
        "top5": topk_accuracy(proba, probe.classes, y_test, 5),
        "best_c": probe.best_c,
        "val_top1": probe.val_top1,
    }
