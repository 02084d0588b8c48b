"""Weighted k-nearest-neighbour classification of frozen features, as in DINO.

Reimplements ``knn_classifier`` of facebookresearch/dino ``eval_knn.py`` (Caron et al., ICCV 2021;
the same vote as Wu et al. 2018 and dinov2 ``eval/knn.py``): features are L2-normalised, each test
feature retrieves its ``k`` most cosine-similar training features, neighbour ``j`` votes for its
label with weight ``exp(s_j / T)``, and the classes are ranked by their summed votes. DINOv2
normalises the weights with a softmax first, which divides every vote of a test sample by the same
constant and so ranks the classes identically.

Tie-breaking: classes with equal vote totals are ranked by ascending class index (a stable
descending sort; DINO's unstable ``sort`` leaves this unspecified), so top-1 is ``argmax`` with the
first maximum. Ties among *neighbours* (equal similarities at the ``k``-th place) are resolved by
:func:`torch.topk` as in DINO. Top-5 follows DINO's ``correct.narrow(1, 0, min(5, k))``: the true
label must be among the first ``min(5, k)`` ranked classes, additionally capped at the number of
classes (so with fewer than five classes top-5 counts all of them). As in DINO, classes that got no
vote still fill the ranking (in index order) after the voted ones.

Memory is bounded by chunking the test side: one chunk costs ``chunk_size × n_train`` floats of
similarities (1024 × 50 000 × 4 B ≈ 200 MB).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (10, 20, 100, 200)
"""DINO's ``--nb_knn`` default."""


def _features(x: npt.ArrayLike | Tensor, name: str) -> Tensor:
    t = x.detach() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    t = t.to(device="cpu", dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(t.shape)}")
    return F.normalize(t, p=2.0, dim=1)


def _labels(y: npt.ArrayLike | Tensor, n: int, name: str) -> Tensor:
    t = y.detach() if isinstance(y, Tensor) else torch.from_numpy(np.asarray(y))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got dtype {t.dtype}")
    t = t.to(device="cpu", dtype=torch.int64)
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if n and int(t.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices")
    return t


@torch.inference_mode()
def knn_classify(
    train_features: npt.ArrayLike | Tensor,
    train_labels: npt.ArrayLike | Tensor,
    test_features: npt.ArrayLike | Tensor,
    test_labels: npt.ArrayLike | Tensor,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """DINO's temperature-weighted kNN accuracy for several ``k`` in one pass.

    Args:
        train_features: ``(n_train, d)`` features (numpy or torch; computed in float32 on CPU).
        train_labels: ``(n_train,)`` integer labels in ``[0, num_classes)``.
        test_features: ``(n_test, d)`` features.
        test_labels: ``(n_test,)`` integer labels (labels ``>= num_classes`` are never correct).
        ks: numbers of neighbours; each is capped at ``n_train`` (the key keeps the requested k).
        temperature: ``T`` in the vote weight ``exp(cos / T)`` (DINO: 0.07).
        num_classes: number of classes; default ``1 + max`` over training and test labels.
        chunk_size: test features processed per similarity block.

    Returns:
        ``top1_k{k}`` and ``top5_k{k}`` for each ``k``: fractions of test samples (0–1).
    """
    train = _features(train_features, "train_features")
    test = _features(test_features, "test_features")
    y_train = _labels(train_labels, train.shape[0], "train_labels")
    y_test = _labels(test_labels, test.shape[0], "test_labels")
    n_train, n_test = train.shape[0], test.shape[0]
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"feature sizes differ: {train.shape[1]} (train) vs {test.shape[1]}")
    if n_train == 0 or n_test == 0:
        raise ValueError("kNN needs at least one training and one test sample")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if num_classes is None:
        num_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    if int(y_train.max()) >= num_classes:
        raise ValueError(f"train_labels must be < num_classes={num_classes}")

    start = time.perf_counter()
    k_max = min(max(ks), n_train)
    top1 = dict.fromkeys(ks, 0)
    top5 = dict.fromkeys(ks, 0)
    for lo in range(0, n_test, chunk_size):
        feats, targets = test[lo : lo + chunk_size], y_test[lo : lo + chunk_size]
        similarity = feats @ train.T  # (b, n_train)
        sims, indices = similarity.topk(k_max, dim=1, largest=True, sorted=True)
        neighbours = y_train[indices]  # (b, k_max)
        weights = (sims / temperature).exp()
        for k in ks:
            k_eff = min(k, n_train)
            votes = torch.zeros(feats.shape[0], num_classes, dtype=weights.dtype)
            votes.scatter_add_(1, neighbours[:, :k_eff], weights[:, :k_eff])
            ranked = votes.sort(dim=1, descending=True, stable=True).indices
            correct = ranked[:, : min(5, k_eff, num_classes)] == targets[:, None]
            top1[k] += int(correct[:, 0].sum())
            top5[k] += int(correct.any(dim=1).sum())

    logger.debug(
        "kNN: %d train, %d test, ks=%s in %.1fs",
        n_train,
        n_test,
        list(ks),
        time.perf_counter() - start,
    )
    result: dict[str, float] = {}
    for k in ks:
        result[f"top1_k{k}"] = top1[k] / n_test
        result[f"top5_k{k}"] = top5[k] / n_test
    return result
