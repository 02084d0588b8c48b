"""Feature extraction sharded over the processes of a ``torchrun`` launch.

Each image set is cut into the batches one process would encode (``batch_size`` images each,
:func:`~eqbench.features.store.batch_spans`); every rank encodes a contiguous run of whole
batches (:func:`shard_spans`), so each image is encoded exactly once (no padding, no duplicates)
and in the very batch it would have in a single process, which keeps its features bit-identical
to a single process's. Rank 0 gathers the shards in rank order, which is dataset order, keeps them
in memory for the probes and alone writes the disk cache; the other ranks keep nothing.

Only rank 0 decides what is missing from the cache (and broadcasts it), so a cache entry that a
concurrent run writes meanwhile cannot make the ranks disagree on what to encode.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from eqbench.errors import EqbenchError
from eqbench.features.store import STORED_KINDS, FeatureRequest, FeatureStore, batch_spans
from eqbench.train.distributed import DistContext

log = logging.getLogger(__name__)


def shard_spans(spans: Sequence[range], rank: int, world_size: int) -> list[range]:
    """The contiguous run of ``spans`` that ``rank`` of ``world_size`` encodes.

    Ranks get ``len(spans) // world_size`` or one more batch each, in rank order; with fewer
    batches than ranks the last ranks get none. Concatenating every rank's runs in rank order
    gives ``spans`` back.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    lo = len(spans) * rank // world_size
    hi = len(spans) * (rank + 1) // world_size
    return list(spans[lo:hi])


def prefetch(store: FeatureStore, requests: Sequence[FeatureRequest], ctx: DistContext) -> int:
    """Encode the image sets of ``requests`` that rank 0 does not hold yet, sharded over ranks.

    A collective call: every rank must call it with the same requests (checked by their cache
    keys). Afterwards ``store.fetch(request)`` on rank 0 returns each set's features without
    encoding; the other ranks' stores hold nothing.

    Args:
        store: this rank's feature store (same encoder, checkpoint and batch size on every rank).
        requests: the image sets; repeated keys are encoded once.
        ctx: where this process stands (:func:`eqbench.train.distributed.setup`).

    Returns:
        The number of image sets encoded (the same on every rank).

    Raises:
        EqbenchError: the ranks built different requests (different data on different nodes).
    """
    unique: dict[str, FeatureRequest] = {}
    for request in requests:
        unique.setdefault(store.key(request.dataset, request.what), request)
    keys = list(unique)
    if any(theirs != keys for theirs in ctx.all_gather_object(keys)):
        raise EqbenchError(
            "The processes of this run built different image sets to encode. Every process must "
            "read the same data: the same dataset paths and files on every node, and the same "
            "eqbench version."
        )
    missing = [key for key in keys if store.cached(key) is None] if ctx.is_main else []
    missing = ctx.all_gather_object(missing)[0]  # rank 0's decision
    for key in missing:
        request = unique[key]
        every_batch = batch_spans(len(request.dataset), store.batch_size)
        spans = shard_spans(every_batch, ctx.rank, ctx.world_size)
        part = (
            store.encode(request.dataset, request.make_batch, request.label, spans)
            if spans
            else None
        )
        whole = _gather(part, ctx)
        if whole is not None:
            _check_rows(whole, len(request.dataset), request.label)
            store.keep(key, whole, request.extra)
    log.info(
        "rank %d: %d of %d image sets encoded (%d images here)",
        ctx.rank,
        len(missing),
        len(keys),
        store.images_encoded,
    )
    return len(missing)


def _gather(part: dict[str, Tensor] | None, ctx: DistContext) -> dict[str, Tensor] | None:
    """Every rank's shard joined in rank order on rank 0 (``None`` elsewhere), one feature kind
    at a time so that rank 0 never holds more than one kind twice."""
    whole: dict[str, Tensor] = {}
    for kind in STORED_KINDS:
        pieces = ctx.gather_object(None if part is None else part.pop(kind))
        if pieces is not None:
            whole[kind] = torch.cat([p for p in pieces if p is not None])
    return whole if ctx.is_main else None


def _check_rows(feats: dict[str, Tensor], n: int, label: str) -> None:
    rows = {kind: int(t.shape[0]) for kind, t in feats.items()}
    if set(rows.values()) != {n}:
        raise EqbenchError(
            f"Gathered features of {label or 'an image set'} have {rows} rows for {n} images; "
            "a process encoded a different number of images. Report this as a bug."
        )
