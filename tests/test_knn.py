"""DINO-style weighted kNN (eqbench.eval.knn) against an independent numpy oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from eqbench.eval.knn import knn_classify

Data = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]


def _oracle(
    train: NDArray[np.float64],
    train_y: NDArray[np.int64],
    test: NDArray[np.float64],
    test_y: NDArray[np.int64],
    k: int,
    temperature: float,
    num_classes: int,
) -> tuple[float, float]:
    """DINO's ``knn_classifier`` vote, one test sample at a time, in float64 numpy."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    k = min(k, len(train))
    top1 = top5 = 0
    for feat, label in zip(test, test_y, strict=True):
        sims = train @ feat
        nearest = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(num_classes)
        np.add.at(votes, train_y[nearest], np.exp(sims[nearest] / temperature))
        ranked = np.argsort(-votes, kind="stable")[: min(5, k, num_classes)]
        top1 += int(ranked[0] == label)
        top5 += int(label in ranked)
    return top1 / len(test), top5 / len(test)


@pytest.fixture
def random_data() -> Data:
    rng = np.random.default_rng(0)
    n_classes, d = 12, 16
    centres = rng.standard_normal((n_classes, d))
    train_y = rng.integers(0, n_classes, 300)
    test_y = rng.integers(0, n_classes, 77)
    # Weakly clustered: accuracies are far from 0 and from 1, so the vote really matters.
    train = (0.6 * centres[train_y] + rng.standard_normal((300, d))).astype(np.float32)
    test = (0.6 * centres[test_y] + rng.standard_normal((77, d))).astype(np.float32)
    return train, train_y, test, test_y


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_numpy_oracle_with_chunking(
    random_data: Data,
    temperature: float,
) -> None:
    train, train_y, test, test_y = random_data
    ks = (1, 3, 10, 20, 100, 1000)  # 1000 > n_train: capped
    result = knn_classify(
        train, train_y, test, test_y, ks=ks, temperature=temperature, num_classes=12, chunk_size=10
    )
    assert set(result) == {f"top{t}_k{k}" for k in ks for t in (1, 5)}
    for k in ks:
        top1, top5 = _oracle(
            train.astype(np.float64), train_y, test.astype(np.float64), test_y, k, temperature, 12
        )
        assert result[f"top1_k{k}"] == pytest.approx(top1, abs=1e-12), k
        assert result[f"top5_k{k}"] == pytest.approx(top5, abs=1e-12), k
        assert result[f"top5_k{k}"] >= result[f"top1_k{k}"]
    # The data really are hard: a trivial implementation could not pass by scoring 0 or 1.
    assert 0.2 < result["top1_k20"] < 0.95


def test_chunk_size_and_input_type_do_not_matter(
    random_data: Data,
) -> None:
    train, train_y, test, test_y = random_data
    reference = knn_classify(train, train_y, test, test_y, chunk_size=1024)
    assert knn_classify(train, train_y, test, test_y, chunk_size=1) == reference
    tensors = knn_classify(
        torch.from_numpy(train),
        torch.from_numpy(train_y),
        torch.from_numpy(test).double(),
        torch.from_numpy(test_y),
        chunk_size=13,
    )
    assert tensors == reference


def test_well_clustered_features_are_classified_perfectly() -> None:
    rng = np.random.default_rng(1)
    centres = 10.0 * rng.standard_normal((5, 32))
    train_y = np.repeat(np.arange(5), 60)
    test_y = rng.integers(0, 5, 50)
    train = centres[train_y] + 0.1 * rng.standard_normal((300, 32))
    test = centres[test_y] + 0.1 * rng.standard_normal((50, 32))
    result = knn_classify(train, train_y, test, test_y, ks=(10, 20), chunk_size=16)
    assert result == {"top1_k10": 1.0, "top5_k10": 1.0, "top1_k20": 1.0, "top5_k20": 1.0}


def test_top5_with_fewer_than_five_classes_counts_every_class() -> None:
    rng = np.random.default_rng(2)
    train, test = rng.standard_normal((40, 8)), rng.standard_normal((30, 8))
    train_y, test_y = rng.integers(0, 3, 40), rng.integers(0, 3, 30)
    result = knn_classify(train, train_y, test, test_y, ks=(10,))
    assert result["top5_k10"] == 1.0
    assert result["top1_k10"] < 1.0


def test_ties_go_to_the_lowest_class_index() -> None:
    train = np.array([[1.0, 0.0], [1.0, 0.0]])  # identical neighbours of different classes
    test = np.array([[1.0, 0.0]])
    assert knn_classify(train, [3, 1], test, [1], ks=(2,))["top1_k2"] == 1.0
    assert knn_classify(train, [3, 1], test, [3], ks=(2,))["top1_k2"] == 0.0


def test_rejects_bad_labels() -> None:
    x = np.eye(4)
    with pytest.raises(ValueError, match="integer"):
        knn_classify(x, np.zeros(4), x, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="num_classes"):
        knn_classify(x, [0, 1, 2, 5], x, [0, 1, 2, 3], num_classes=4)
