"""Transformation-prediction probes (eqbench.protocols.transform_prediction.probes) and the
invariance score."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.metrics import r2_score

from eqbench.protocols.invariance.score import derangement, invariance_score
from eqbench.protocols.transform_prediction.probes import (
    ProbeConfig,
    ProbeKind,
    fit_classification,
    fit_predict_classification,
    fit_predict_regression,
    fit_regression,
)

# A small MLP keeps these tests fast; the protocol (early stopping etc.) is the same.
SMALL = ProbeConfig(hidden=(64, 64), max_epochs=60, patience=5)
KINDS: tuple[ProbeKind, ...] = ("mlp", "linear")


def _num(metrics: dict[str, float | list[float]], key: str) -> float:
    value = metrics[key]
    assert isinstance(value, float)
    return value


def _linear_data(
    n: int, d: int, k: int, noise: float, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, k))
    scales = np.array([1.0, 30.0, 0.01][:k])  # targets in very different units
    offsets = np.array([5.0, -100.0, 0.0][:k])
    y = (x @ w + noise * rng.standard_normal((n, k))) * scales + offsets
    return x, y


def test_config_defaults_match_protocol() -> None:
    cfg = ProbeConfig()
    assert cfg.hidden == (512, 512)
    assert (cfg.max_epochs, cfg.patience, cfg.val_fraction) == (200, 10, 0.1)
    assert (cfg.learning_rate, cfg.batch_size) == (1e-3, 256)
    np.testing.assert_allclose(cfg.ridge_alphas, np.logspace(-3, 5, 17))
    np.testing.assert_allclose(cfg.logistic_cs, np.logspace(-4, 2, 7))


@pytest.mark.parametrize("kind", KINDS)
def test_r2_equals_sklearn_oracle(kind: ProbeKind) -> None:
    x, y = _linear_data(700, 12, 3, noise=1.0, seed=0)
    metrics, pred = fit_predict_regression(
        x[:500], y[:500], x[500:], y[500:], kind=kind, seed=0, config=SMALL
    )
    assert pred.shape == (200, 3)
    assert _num(metrics, "r2") == pytest.approx(r2_score(y[500:], pred), abs=1e-12)
    per_dim = r2_score(y[500:], pred, multioutput="raw_values")
    np.testing.assert_allclose(metrics["r2_per_dim"], per_dim, atol=1e-12)
    # Predictions are in the targets' units: the large-offset dimension is predicted near -100.
    assert abs(pred[:, 1].mean() - y[500:, 1].mean()) < 0.2 * y[500:, 1].std()


def test_linear_probe_recovers_linear_target() -> None:
    x, y = _linear_data(1200, 20, 2, noise=0.1, seed=1)
    metrics = fit_regression(x[:1000], y[:1000], x[1000:], y[1000:], kind="linear", seed=0)
    assert _num(metrics, "r2") > 0.95
    assert isinstance(metrics["alpha"], float)


def test_r2_is_invariant_to_target_units() -> None:
    x, y = _linear_data(600, 10, 1, noise=2.0, seed=2)
    a = fit_regression(x[:400], y[:400], x[400:], y[400:], kind="linear", seed=0)
    b = fit_regression(x[:400], 7 * y[:400] - 3, x[400:], 7 * y[400:] - 3, kind="linear", seed=0)
    assert a["r2"] == pytest.approx(b["r2"], abs=1e-9)


def test_mlp_probe_captures_nonlinear_target_linear_does_not() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2500, 8)).astype(np.float32)
    y = x[:, 0] ** 2 + 0.05 * rng.standard_normal(2500)  # uncorrelated with every feature
    mlp = fit_regression(x[:2000], y[:2000], x[2000:], y[2000:], kind="mlp", seed=0, config=SMALL)
    lin = fit_regression(x[:2000], y[:2000], x[2000:], y[2000:], kind="linear", seed=0)
    assert _num(mlp, "r2") > 0.8
    assert _num(lin, "r2") < 0.05
    assert 1 <= _num(mlp, "epochs") <= SMALL.max_epochs


@pytest.mark.parametrize("kind", KINDS)
def test_constant_features_give_nonpositive_r2(kind: ProbeKind) -> None:
    rng = np.random.default_rng(4)
    x = np.full((400, 16), 3.25, dtype=np.float32)
    y = rng.standard_normal((400, 2))
    metrics = fit_regression(x[:300], y[:300], x[300:], y[300:], kind=kind, seed=0, config=SMALL)
    assert np.isfinite(_num(metrics, "r2"))
    assert _num(metrics, "r2") <= 0.0
    per_dim = metrics["r2_per_dim"]
    assert isinstance(per_dim, list)
    assert len(per_dim) == 2
    assert all(v <= 0.0 for v in per_dim)


@pytest.mark.parametrize("kind", KINDS)
def test_shuffled_targets_give_no_r2(kind: ProbeKind) -> None:
    x, y = _linear_data(1000, 16, 1, noise=0.1, seed=5)
    y_shuffled = np.random.default_rng(0).permutation(y)
    metrics = fit_regression(
        x[:800], y_shuffled[:800], x[800:], y_shuffled[800:], kind=kind, seed=0, config=SMALL
    )
    assert _num(metrics, "r2") <= 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_test_targets_do_not_influence_the_fit(kind: ProbeKind) -> None:
    x, y = _linear_data(600, 10, 1, noise=1.0, seed=6)
    _, pred_a = fit_predict_regression(
        x[:400], y[:400], x[400:], y[400:], kind=kind, seed=0, config=SMALL
    )
    scrambled = np.random.default_rng(1).standard_normal(200) * 1e3
    _, pred_b = fit_predict_regression(
        x[:400], y[:400], x[400:], scrambled, kind=kind, seed=0, config=SMALL
    )
    np.testing.assert_array_equal(pred_a, pred_b)


def test_unknown_kind_is_rejected() -> None:
    x, y = _linear_data(50, 4, 1, noise=1.0, seed=7)
    with pytest.raises(ValueError, match="unknown probe kind"):
        fit_regression(x, y, x, y, kind="svm", seed=0)  # type: ignore[arg-type]


def _imbalanced_labels(n: int, seed: int) -> NDArray[np.int64]:
    return np.random.default_rng(seed).choice(3, size=n, p=[0.2, 0.65, 0.15])


@pytest.mark.parametrize("kind", KINDS)
def test_constant_features_give_majority_accuracy(kind: ProbeKind) -> None:
    y = _imbalanced_labels(900, 8)
    x = np.zeros((900, 16), dtype=np.float32)
    metrics, pred = fit_predict_classification(
        x[:600], y[:600], x[600:], y[600:], kind=kind, seed=0, config=SMALL
    )
    majority = np.bincount(y[:600]).argmax()
    assert metrics["chance"] == pytest.approx(np.mean(y[:600] == majority))
    np.testing.assert_array_equal(pred, np.full(300, majority))
    assert metrics["accuracy"] == pytest.approx(np.mean(y[600:] == majority))
    assert abs(metrics["accuracy"] - metrics["chance"]) < 0.08


@pytest.mark.parametrize("kind", KINDS)
def test_classification_on_informative_features(kind: ProbeKind) -> None:
    rng = np.random.default_rng(9)
    y = _imbalanced_labels(900, 9)
    centres = rng.standard_normal((3, 12)) * 2.0
    x = (centres[y] + rng.standard_normal((900, 12))).astype(np.float32)
    metrics = fit_classification(
        x[:600], y[:600], x[600:], y[600:], kind=kind, seed=0, config=SMALL
    )
    assert metrics["accuracy"] > 0.9
    assert metrics["accuracy"] > metrics["chance"] + 0.2
    if kind == "linear":
        assert metrics["best_c"] in SMALL.logistic_cs


def test_classification_needs_two_classes() -> None:
    x = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match="two classes"):
        fit_classification(
            x, np.zeros(20, dtype=int), x, np.zeros(20, dtype=int), kind="linear", seed=0
        )


# --- invariance score --------------------------------------------------------------------------


def test_derangement_has_no_fixed_points() -> None:
    for n in (2, 3, 10, 101):
        pi = derangement(n, seed=n)
        assert sorted(pi.tolist()) == list(range(n))
        assert np.all(pi != np.arange(n))
    np.testing.assert_array_equal(derangement(50, 3), derangement(50, 3))
    with pytest.raises(ValueError):
        derangement(1, 0)


def test_identical_features_are_invariant() -> None:
    f = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)
    score = invariance_score(f, f.copy())
    assert score["invariance"] == pytest.approx(1.0, abs=1e-9)
    assert score["cos_pair"] == pytest.approx(1.0, abs=1e-9)
    # Cosine ignores the scale of each feature vector.
    assert invariance_score(f, 3.0 * f)["invariance"] == pytest.approx(1.0, abs=1e-9)


def test_independent_features_score_near_zero_even_with_shared_offset() -> None:
    rng = np.random.default_rng(1)
    offset = 4.0 * rng.standard_normal(64)  # anisotropic: every feature shares this component
    a = offset + rng.standard_normal((2000, 64))
    b = offset + rng.standard_normal((2000, 64))
    score = invariance_score(a, b, seed=0)
    assert score["cos_pair"] > 0.8  # raw cosine looks "invariant" ...
    assert abs(score["invariance"]) < 0.1  # ... the normalised score does not


def test_partial_invariance_lies_between() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2000, 64))
    b = a + rng.standard_normal((2000, 64))
    assert 0.3 < invariance_score(a, b)["invariance"] < 0.9


def test_constant_encoder_is_invariant() -> None:
    const = np.tile(np.arange(1.0, 9.0), (50, 1))
    assert invariance_score(const, const)["invariance"] == 1.0
    zeros = np.zeros((50, 8))
    assert invariance_score(zeros, zeros)["invariance"] == 1.0
    collapsed_then_not = np.random.default_rng(3).standard_normal((50, 8))
    assert np.isnan(invariance_score(const, collapsed_then_not)["invariance"])
