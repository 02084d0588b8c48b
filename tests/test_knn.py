"""DINO-style weighted kNN (eqbench.protocols.classification.knn) against an independent numpy
oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from eqbench.protocols.classification.knn import effective_ks, knn_classify, nearest_neighbours

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


def _lexicographic_oracle(
    train: NDArray[np.float64], test: NDArray[np.float64], k: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Each query's ``k`` nearest rows by (cosine descending, index ascending): numpy's lexsort."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = test @ train.T
    index = np.broadcast_to(np.arange(len(train)), sims.shape)
    order = np.lexsort((index, -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, 1), order


def _tied_data(n_train: int, n_test: int, d: int = 16) -> Data:
    """Features of ±1 entries: once normalised (±0.25 for d = 16) every product and partial sum
    is exact in float32, so cosines are multiples of 1/16 whatever the summation order: exact ties
    everywhere, identical in every block layout."""
    rng = np.random.default_rng(3)
    train = rng.choice([-1.0, 1.0], size=(n_train, d)).astype(np.float32)
    test = rng.choice([-1.0, 1.0], size=(n_test, d)).astype(np.float32)
    train[5:40] = train[4]  # a block of duplicates, tied with each other at every distance
    return train, rng.integers(0, 7, n_train), test, rng.integers(0, 7, n_test)


@pytest.mark.parametrize("k", [1, 9, 40, 150])
def test_neighbours_of_exact_ties_follow_the_lexicographic_oracle_in_any_layout(k: int) -> None:
    train, _, test, _ = _tied_data(301, 45)
    want_sims, want_ids = _lexicographic_oracle(
        train.astype(np.float64), test.astype(np.float64), k + 1
    )
    assert (want_sims[:, k - 1] == want_sims[:, k]).mean() > 0.3  # ties cross the k-th place
    want_sims, want_ids = want_sims[:, :k], want_ids[:, :k]
    for chunk, shard in [(45, None), (45, 301), (7, 64), (16, 37), (1, 300), (45, 1)]:
        sims, ids = nearest_neighbours(
            torch.from_numpy(train),
            torch.from_numpy(test),
            k,
            chunk_size=chunk,
            shard_size=shard,
            device=torch.device("cpu"),
        )
        assert np.array_equal(ids.numpy(), want_ids), (chunk, shard)
        assert np.array_equal(sims.numpy().astype(np.float64), want_sims), (chunk, shard)


def test_sharded_knn_equals_one_block_knn_with_ties(random_data: Data) -> None:
    # Tied features: every layout gives bit-identical similarities, so everything must agree.
    train, train_y, test, test_y = _tied_data(301, 45)
    ks = (1, 5, 20, 100, 200)  # 100 and 200 exceed every shard below
    one_block = knn_classify(
        train, train_y, test, test_y, ks=ks, chunk_size=45, shard_size=301, num_classes=7
    )
    assert one_block == knn_classify(train, train_y, test, test_y, ks=ks, num_classes=7)
    for chunk, shard in [(45, 64), (10, 37), (3, 150), (45, 7)]:  # 301 = 4·64 + 45, 8·37 + 5, ...
        sharded = knn_classify(
            train, train_y, test, test_y, ks=ks, chunk_size=chunk, shard_size=shard, num_classes=7
        )
        assert sharded == one_block, (chunk, shard)
    for k in ks:  # and the answer is DINO's vote over the lexicographic neighbours
        top1, top5 = _oracle(
            train.astype(np.float64), train_y, test.astype(np.float64), test_y, k, 0.07, 7
        )
        assert one_block[f"top1_k{k}"] == pytest.approx(top1, abs=1e-12), k
        assert one_block[f"top5_k{k}"] == pytest.approx(top5, abs=1e-12), k

    # Real-valued features, shards of realistic size (BLAS rounds the same in every block).
    train, train_y, test, test_y = random_data
    ks = (1, 10, 20, 100, 200)
    one_block = knn_classify(train, train_y, test, test_y, ks=ks, chunk_size=77, shard_size=300)
    ref_sims, ref_ids = nearest_neighbours(
        torch.from_numpy(train),
        torch.from_numpy(test),
        200,
        chunk_size=77,
        shard_size=300,
        device=torch.device("cpu"),
    )
    for shard in (128, 110, 200):  # last shards of 44, 80 and 100 rows
        sharded = knn_classify(train, train_y, test, test_y, ks=ks, chunk_size=77, shard_size=shard)
        assert sharded == one_block, shard
        sims, ids = nearest_neighbours(
            torch.from_numpy(train),
            torch.from_numpy(test),
            200,
            chunk_size=77,
            shard_size=shard,
            device=torch.device("cpu"),
        )
        assert torch.equal(ids, ref_ids) and torch.equal(sims, ref_sims), shard


def test_memory_per_block_is_bounded_by_the_shard_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import eqbench.protocols.classification.knn as knn

    widths = []
    real = knn.select_top

    def spy(values: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        widths.append(values.shape)
        return real(values, ids, k)

    monkeypatch.setattr(knn, "select_top", spy)
    monkeypatch.setattr(knn, "MAX_BLOCK_ELEMENTS", 20 * 50)
    train, train_y, test, test_y = _tied_data(301, 45)
    knn_classify(train, train_y, test, test_y, ks=(3,), chunk_size=20)
    # default shard: 1000 // 20 = 50 rows; blocks (≤20, 50), merges (≤20, 3 + 3)
    assert max(w[0] * w[1] for w in widths) == 20 * 50
    assert {w[1] for w in widths} == {50, 1, 6, 4}  # 301 = 6·50 + 1; merges 3+3, 3+1


def test_k_above_the_train_size_is_capped() -> None:
    assert effective_ks([10, 20, 100, 200], 50) == [10, 20, 50, 50]
    train, train_y, test, test_y = _tied_data(50, 20)
    capped = knn_classify(train, train_y, test, test_y, ks=(100, 50), num_classes=7)
    assert capped["top1_k100"] == capped["top1_k50"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_answer_on_exact_features() -> None:
    train, train_y, test, test_y = _tied_data(301, 45)
    cpu = knn_classify(train, train_y, test, test_y, ks=(1, 20, 200), num_classes=7)
    gpu = knn_classify(
        train, train_y, test, test_y, ks=(1, 20, 200), num_classes=7, device="cuda", shard_size=64
    )
    assert gpu == cpu


def test_rejects_non_finite_features() -> None:
    x = np.eye(4)
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_classify(bad, [0, 1, 2, 3], x, [0, 1, 2, 3])


def test_capped_k_is_recorded_in_the_result(tmp_path: Path) -> None:
    from eqbench.protocols.run import EvalConfig, evaluate

    def run(ks: list[int]) -> dict[str, Any]:
        [(record, _)] = evaluate(
            EvalConfig(
                tasks="classification/knn",
                checkpoint="baseline:pixels",
                results_dir=tmp_path / str(len(ks)),
                cache_dir=None,
                overrides={"ks": ks, "image_size": 16},
                show_progress=False,
            )
        )
        assert set(record.metrics) == {f"top{t}_k{k}" for k in ks for t in (1, 5)}
        return record.adjustments

    adjusted = run([20, 5000])  # digits has 1257 training images
    assert adjusted["ks"]["requested"] == [20, 5000]
    assert adjusted["ks"]["used"] == [20, 1257]
    assert "1257 training samples" in adjusted["ks"]["reason"]
    assert "ks" not in run([10, 20, 100])
