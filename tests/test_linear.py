"""Logistic-regression linear probe (eqbench.protocols.classification.linear)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from eqbench.protocols.classification.linear import (
    DEFAULT_C_GRID,
    fit_logistic_probe,
    logistic_regression_probe,
    split_train_val,
    topk_accuracy,
)

COARSE = tuple(float(c) for c in np.logspace(-4, 3, 8))

Data = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]


def _clusters(n_classes: int, d: int, spread: float, seed: int, n: int = 600) -> Data:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d)) * 3.0
    y = rng.integers(0, n_classes, n + 300)
    x = (centres[y] + spread * rng.standard_normal((n + 300, d))).astype(np.float32)
    return x[:n], y[:n], x[n:], y[n:]


def test_default_grid_is_dinov2s() -> None:
    assert len(DEFAULT_C_GRID) == 45
    assert DEFAULT_C_GRID[0] == pytest.approx(1e-6)
    assert DEFAULT_C_GRID[-1] == pytest.approx(1e5)


def test_separable_clusters_are_classified() -> None:
    train_x, train_y, test_x, test_y = _clusters(5, 32, 1.0, seed=0)
    result = logistic_regression_probe(train_x, train_y, test_x, test_y)
    assert result["top1"] >= 0.95
    assert result["top5"] == 1.0  # five classes: top-5 counts all of them
    assert result["val_top1"] >= 0.95
    assert result["best_c"] in DEFAULT_C_GRID


def test_top5_at_least_top1_with_many_classes() -> None:
    train_x, train_y, test_x, test_y = _clusters(20, 16, 4.0, seed=1, n=1000)
    result = logistic_regression_probe(train_x, train_y, test_x, test_y, c_grid=COARSE)
    assert 0.1 < result["top1"] < 0.95  # hard enough that top-5 can differ
    assert result["top5"] > result["top1"]


def test_c_is_chosen_without_the_test_labels() -> None:
    train_x, train_y, test_x, test_y = _clusters(6, 16, 3.0, seed=2)
    a = logistic_regression_probe(train_x, train_y, test_x, test_y, c_grid=COARSE)
    permuted = np.random.default_rng(0).permutation(test_y)
    b = logistic_regression_probe(train_x, train_y, test_x, permuted, c_grid=COARSE)
    assert a["best_c"] == b["best_c"]
    assert a["val_top1"] == b["val_top1"]
    assert a["top1"] != b["top1"]  # the test labels did change, only the test score moved


def test_refit_uses_all_training_data_with_best_c() -> None:
    train_x, train_y, test_x, _ = _clusters(4, 12, 3.0, seed=3)
    probe = fit_logistic_probe(train_x, train_y, c_grid=COARSE)
    scaler = StandardScaler().fit(train_x)
    cold = LogisticRegression(C=probe.best_c, max_iter=1000).fit(scaler.transform(train_x), train_y)
    agreement = np.mean(probe.predict(test_x) == cold.predict(scaler.transform(test_x)))
    assert agreement >= 0.99
    assert probe.val_scores[probe.c_grid.index(probe.best_c)] == probe.val_top1
    assert probe.val_top1 == max(probe.val_scores)


def test_constant_features_give_majority_accuracy() -> None:
    rng = np.random.default_rng(4)
    y = rng.choice(3, size=600, p=[0.2, 0.7, 0.1])
    x = np.ones((600, 8), dtype=np.float32)
    result = logistic_regression_probe(x[:400], y[:400], x[400:], y[400:], c_grid=COARSE)
    assert result["top1"] == pytest.approx(np.mean(y[400:] == 1))


def test_topk_accuracy_by_hand() -> None:
    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    classes = np.array([10, 20, 30])
    labels = np.array([30, 20, 99])  # 99 was never seen in training
    assert topk_accuracy(proba, classes, labels, 1) == 0.0  # the tie in row 2 goes to class 10
    assert topk_accuracy(proba, classes, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(proba, classes, labels, 5) == pytest.approx(2 / 3)


def test_validation_split_is_stratified_and_disjoint() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    fit_idx, val_idx = split_train_val(labels, 0.2, seed=0)
    assert len(np.intersect1d(fit_idx, val_idx)) == 0
    assert len(fit_idx) + len(val_idx) == len(labels)
    np.testing.assert_array_equal(np.bincount(labels[val_idx]), [20, 10, 6, 4])
    # A singleton class makes stratification impossible: fall back to a random split.
    fit_idx, val_idx = split_train_val(np.array([0] * 30 + [1]), 0.2, seed=0)
    assert len(fit_idx) + len(val_idx) == 31
