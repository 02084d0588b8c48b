"""Weighted k-nearest-neighbour classification of frozen features, as in DINO.

Reimplements ``knn_classifier`` of facebookresearch/dino ``eval_knn.py`` (Caron et al., ICCV 2021;
the same vote as Wu et al. 2018 and dinov2 ``eval/knn.py``): features are L2-normalised, each test
feature retrieves its ``k`` most cosine-similar training features, neighbour ``j`` votes for its
label with weight ``exp(s_j / T)``, and the classes are ranked by their summed votes. DINOv2
normalises the weights with a softmax first, which divides every vote of a test sample by the same
constant and so ranks the classes identically.

Tie-breaking: classes with equal vote totals are ranked by ascending class index (a stable
descending sort; DINO's unstable ``sort`` leaves this unspecified), so top-1 is ``argmax`` with the
first maximum. Top-5 follows DINO's ``correct.narrow(1, 0, min(5, k))``: the true
label must be among the first ``min(5, k)`` ranked classes, additionally capped at the number of
classes (so with fewer than five classes top-5 counts all of them). As in DINO, classes that got no
vote still fill the ranking (in index order) after the voted ones.

Neighbour order is total: similarity descending, then training index ascending. Ties at the
``k``-th place therefore go to the lowest training indices (DINO leaves them to :func:`torch.topk`,
whose choice among equal values is unspecified; this is the order of a stable sort, and it does
not depend on how the computation is split).

Memory stays bounded at any scale. The test side is processed ``chunk_size`` queries at a time and
the train side ``shard_size`` rows at a time: each (chunk × shard) block of similarities is reduced
to its top ``k`` at once, and the per-shard top-``k`` lists are merged into a running top-``k`` per
query under the same total order, so the neighbours, their order and hence the votes are those of
the one-block computation. The computation runs on ``device`` (default: where the train features
live; numpy arrays live on the CPU); train shards are moved there one at a time, so the train
features need not fit on it. Peak memory there is about ``n_test × d`` (the queries) +
``n_test × k × 12 B`` (the running top-``k``) + ``shard × d`` + about ``10 B`` per block element.
With the defaults (``shard_size=None``: one shard while a block stays under
:data:`MAX_BLOCK_ELEMENTS`) ImageNet's 50 000 queries × 1.28 M train features at ``k = 200`` take
about 77 MB + 120 MB + 0.7 GB (the block and its temporaries) besides the train features.

Identity with the one-block computation assumes the matrix product returns the same dot product for
a pair of features whichever block it is computed in. MKL does for blocks of a hundred rows or more;
tiny blocks (a few rows) go through other BLAS paths that may round the last bit differently, which
can only matter for neighbours whose similarities agree to the last bit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (10, 20, 100, 200)
"""DINO's ``--nb_knn`` default."""

MAX_BLOCK_ELEMENTS = 1 << 26
"""Similarities computed at once when ``shard_size`` is not given (64 M floats = 256 MB)."""


def _as_tensor(x: npt.ArrayLike | Tensor, name: str) -> Tensor:
    """``x`` as a 2-D tensor where it lives (numpy arrays are wrapped without a copy)."""
    t = x.detach() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(t.shape)}")
    return t


def _normalised(x: Tensor, device: torch.device, name: str) -> Tensor:
    """Rows of ``x`` as float32 on ``device``, L2-normalised (finite values required)."""
    t = x.to(device=device, dtype=torch.float32)
    if not bool(t.isfinite().all()):
        raise ValueError(f"{name} contain NaN or infinite values; check the encoder's output")
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


def effective_ks(ks: Sequence[int], n_train: int) -> list[int]:
    """The ``k`` actually used for each requested ``k``: at most ``n_train`` neighbours exist."""
    return [min(int(k), n_train) for k in ks]


def select_top(values: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest ``values`` of each row, ordered by value descending then id ascending.

    Among values equal to the ``k``-th largest, the lowest ids are kept. This requires that, in
    each row, equal values appear in ascending id order (true of a block whose columns are in
    training order, and of the concatenation of two such top lists of consecutive shards).

    Args:
        values: ``(b, n)`` similarities.
        ids: ``(b, n)`` training indices of the columns, or ``(n,)`` shared by every row.
        k: how many to keep, ``1 <= k <= n``.

    Returns:
        ``(values, ids)``, each ``(b, k)``.
    """
    b, n = values.shape
    ids = ids.expand(b, n)
    top_v, top_pos = values.topk(k, dim=1, largest=True, sorted=True)  # (b, k)
    if k < n:
        kth = top_v[:, -1:]  # (b, 1)
        # topk's choice among values equal to the k-th is unspecified: redo those rows exactly.
        ambiguous = (values == kth).sum(1) > (top_v == kth).sum(1)
        if bool(ambiguous.any()):
            rows = ambiguous.nonzero().squeeze(1)
            vals, kth_a = values[rows], kth[rows]
            above, equal = vals > kth_a, vals == kth_a
            need = k - above.sum(1, keepdim=True)  # (a, 1) equal values to keep, first ones
            keep = above | (equal & (equal.cumsum(1, dtype=torch.int32) <= need))
            top_pos[rows] = keep.nonzero()[:, 1].view(-1, k)
            top_v[rows] = vals.gather(1, top_pos[rows])
    top_ids = ids.gather(1, top_pos)
    by_id = top_ids.argsort(dim=1)
    top_v, top_ids = top_v.gather(1, by_id), top_ids.gather(1, by_id)
    by_value = top_v.argsort(dim=1, descending=True, stable=True)
    return top_v.gather(1, by_value), top_ids.gather(1, by_value)


@dataclass
class _Neighbours:
    """Running top-``k`` of one query chunk: ``(b, w)`` similarities and training indices."""

    sims: Tensor
    ids: Tensor


def nearest_neighbours(
    train: Tensor,
    test: Tensor,
    k: int,
    *,
    chunk_size: int,
    shard_size: int | None,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Cosine similarities and indices of each test row's ``k`` nearest training rows.

    Args:
        train: ``(n_train, d)`` raw features (any device; moved to ``device`` one shard at a time).
        test: ``(n_test, d)`` raw features.
        k: neighbours per query, ``1 <= k <= n_train``.
        chunk_size: queries per block.
        shard_size: training rows per block; ``None``: as many as keep a block under
            :data:`MAX_BLOCK_ELEMENTS` (all of them for up to 65 536 rows at the default chunk).
        device: where to compute.

    Returns:
        ``(sims, ids)``, each ``(n_test, k)`` on ``device``, ordered by similarity descending then
        training index ascending.
    """
    n_train, n_test = train.shape[0], test.shape[0]
    shard = shard_size or max(1, MAX_BLOCK_ELEMENTS // min(chunk_size, n_test))
    shard = min(shard, n_train)
    queries = _normalised(test, device, "test_features")
    chunks = range(0, n_test, chunk_size)
    running: list[_Neighbours | None] = [None] * len(chunks)
    for lo in range(0, n_train, shard):
        keys = _normalised(train[lo : lo + shard], device, "train_features")  # (s, d)
        ids = torch.arange(lo, lo + keys.shape[0], device=device)
        for c, q_lo in enumerate(chunks):
            block = queries[q_lo : q_lo + chunk_size] @ keys.T  # (b, s)
            sims, top_ids = select_top(block, ids, min(k, keys.shape[0]))
            prev = running[c]
            if prev is not None:  # earlier shards hold lower indices: equal values stay in order
                both_sims = torch.cat([prev.sims, sims], dim=1)
                both_ids = torch.cat([prev.ids, top_ids], dim=1)
                sims, top_ids = select_top(both_sims, both_ids, min(k, both_sims.shape[1]))
            running[c] = _Neighbours(sims, top_ids)
        del keys
    done = [r for r in running if r is not None]
    return torch.cat([r.sims for r in done]), torch.cat([r.ids for r in done])


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
    shard_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """DINO's temperature-weighted kNN accuracy for several ``k`` in one pass.

    Args:
        train_features: ``(n_train, d)`` features (numpy or torch; computed in float32).
        train_labels: ``(n_train,)`` integer labels in ``[0, num_classes)``.
        test_features: ``(n_test, d)`` features.
        test_labels: ``(n_test,)`` integer labels (labels ``>= num_classes`` are never correct).
        ks: numbers of neighbours; each is capped at ``n_train`` (the key keeps the requested k;
            :func:`effective_ks` gives the ``k`` used).
        temperature: ``T`` in the vote weight ``exp(cos / T)`` (DINO: 0.07).
        num_classes: number of classes; default ``1 + max`` over training and test labels.
        chunk_size: test features per similarity block.
        shard_size: training features per similarity block (``None``: see
            :func:`nearest_neighbours`). Any value gives the same answer.
        device: where to compute; default: the device of ``train_features`` (CPU for numpy).

    Returns:
        ``top1_k{k}`` and ``top5_k{k}`` for each ``k``: fractions of test samples (0–1).
    """
    train = _as_tensor(train_features, "train_features")
    test = _as_tensor(test_features, "test_features")
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
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be positive (or None), got {shard_size}")
    if num_classes is None:
        num_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    if int(y_train.max()) >= num_classes:
        raise ValueError(f"train_labels must be < num_classes={num_classes}")
    where = torch.device(device) if device is not None else train.device

    start = time.perf_counter()
    used = effective_ks(ks, n_train)
    sims, ids = nearest_neighbours(
        train, test, max(used), chunk_size=chunk_size, shard_size=shard_size, device=where
    )
    neighbours = y_train.to(where)[ids]  # (n_test, k_max)
    targets = y_test.to(where)
    top1 = dict.fromkeys(ks, 0)
    top5 = dict.fromkeys(ks, 0)
    for lo in range(0, n_test, chunk_size):
        labels, weights = (
            neighbours[lo : lo + chunk_size],
            (sims[lo : lo + chunk_size] / temperature).exp(),
        )
        votes = torch.zeros(labels.shape[0], num_classes, dtype=weights.dtype, device=where)
        for j in range(
            max(used)
        ):  # one vote per row per step: a fixed, device-independent sum order
            votes.scatter_add_(1, labels[:, j : j + 1], weights[:, j : j + 1])
            for k, k_eff in zip(ks, used, strict=True):
                if k_eff != j + 1:
                    continue
                ranked = votes.sort(dim=1, descending=True, stable=True).indices
                correct = (
                    ranked[:, : min(5, k_eff, num_classes)] == targets[lo : lo + chunk_size, None]
                )
                top1[k] += int(correct[:, 0].sum())
                top5[k] += int(correct.any(dim=1).sum())

    logger.debug(
        "kNN: %d train, %d test, ks=%s on %s in %.1fs",
        n_train,
        n_test,
        list(ks),
        where,
        time.perf_counter() - start,
    )
    result: dict[str, float] = {}
    for k in ks:
        result[f"top1_k{k}"] = top1[k] / n_test
        result[f"top5_k{k}"] = top5[k] / n_test
    return result
