"""Evaluation protocols: what a task file's ``protocol:`` names.

A protocol is a class with a typed ``Config`` dataclass (the task file's ``config:`` section,
validated with did-you-mean) and a ``run`` method that returns metric values per probe seed.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from eqbench.checkpoints import LoadedModel
from eqbench.data.base import DatasetSpec, ImageDataset, load_dataset
from eqbench.errors import DatasetError
from eqbench.features.store import FeatureRequest, FeatureStore
from eqbench.registry import Registry
from eqbench.train.distributed import DistContext


@dataclass
class EvalContext:
    """What every protocol run gets besides its config.

    Attributes:
        model: the checkpoint under evaluation.
        store: the feature store (encoder + cache).
        dataset: the dataset spec to use (the task's default unless overridden).
        seed: data seed (which crops, which transformation parameters); probes use
            ``seed, seed + 1, ...``.
        adjustments: what the protocol changed while running, e.g. ``{"ks": {"requested": [..],
            "used": [..], "reason": ...}}``; recorded in the result beside the planned ones.
        dist: the ``torchrun`` launch, given only to a :attr:`~Protocol.collective` protocol
            (``None``: this process runs the task alone).
    """

    model: LoadedModel
    store: FeatureStore
    dataset: DatasetSpec
    seed: int
    adjustments: dict[str, Any] = field(default_factory=dict)
    dist: DistContext | None = None

    def open(self, split: str, n: int | None = None) -> ImageDataset:
        """Open a split of the context's dataset."""
        return load_dataset(self.dataset, split, n=n, seed=self.seed)


#: ``metric name -> one value per probe seed``.
MetricValues = dict[str, list[float]]

D = TypeVar("D")


def open_split(
    dataset: DatasetSpec, split: str, n: int | None, seed: int, kind: Callable[..., D], lacking: str
) -> D:
    """A split of ``dataset``, which must be an instance of the class ``kind``; else a
    DatasetError saying ``Dataset '<dataset>' has no <lacking>`` (what is missing and which
    datasets have it). (``kind`` is typed as a callable so abstract dataset classes pass mypy.)"""
    data = load_dataset(dataset, split, n=n, seed=seed)
    if not isinstance(kind, type) or not isinstance(data, kind):
        raise DatasetError(f"Dataset '{dataset}' has no {lacking}")
    return data  # type: ignore[return-value]


#: The units a protocol gives its metrics (:attr:`Protocol.units`), with what each means.
UNITS = {
    "percent": "a fraction in [0, 1], shown as a percentage",
    "r2": "coefficient of determination (at most 1)",
    "score": "a plain number",
    "px": "pixels",
    "m": "metres",
    "s": "seconds",
    "value": "a hyper-parameter the protocol selected",
}


class Protocol(ABC):
    """Base class of evaluation protocols."""

    Config: ClassVar[type]
    #: metric names this protocol reports (the task's primary metric must be one of them).
    metrics: ClassVar[tuple[str, ...]]
    #: the unit of every metric (a key of :data:`UNITS`): how the leaderboard shows it.
    units: ClassVar[dict[str, str]]
    #: metrics where lower is better (errors, times); a task whose primary metric is one of them
    #: must say ``higher_is_better: false``.
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    #: ``True``: under ``torchrun``, :meth:`run` is called on every process with the process
    #: group alive and ``ctx.dist`` set (it trains with DistributedDataParallel and shares its
    #: work); rank 0's values are recorded. ``False``: rank 0 runs it alone after the sharded
    #: encoding (:meth:`feature_requests`).
    collective: ClassVar[bool] = False

    @abstractmethod
    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        """Evaluate ``ctx.model``; returns metric values per probe seed."""

    def feature_requests(self, config: Any, ctx: EvalContext) -> list[FeatureRequest] | None:
        """The image sets :meth:`run` encodes through ``ctx.store``, listed beforehand.

        Under ``torchrun`` they are encoded sharded over the processes first
        (:func:`eqbench.features.sharding.prefetch`) and :meth:`run`, on rank 0 alone, reads
        them from memory. ``None`` (the default) means not listed: under ``torchrun`` such a
        task runs on rank 0 alone, encoding there.
        """
        return None

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        """Check what can be checked before any model is loaded or image encoded (the data's
        class counts, the metrics a config will report); raise an
        :class:`~eqbench.errors.EqbenchError` naming the remedy. The default checks nothing."""
        return None

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this protocol cannot run here (an optional dependency is missing, with the
        command that installs it), or ``None`` when it can. ``eqbench eval`` skips such tasks."""
        return None


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol", "eqbench ls protocols")


def metric_unit(protocol: str, metric: str) -> str:
    """The unit ``protocol`` declares for ``metric``; ``score`` for a protocol or metric that is
    no longer registered (an old result)."""
    if protocol not in PROTOCOLS:
        return "score"
    return PROTOCOLS.get(protocol).units.get(metric, "score")


def metric_higher_is_better(protocol: str, metric: str) -> bool | None:
    """The direction ``protocol`` declares for ``metric`` (:attr:`Protocol.lower_is_better`);
    ``None`` for a protocol or metric that is no longer registered (an old result)."""
    if protocol not in PROTOCOLS or metric not in PROTOCOLS.get(protocol).metrics:
        return None
    return metric not in PROTOCOLS.get(protocol).lower_is_better


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` that is stable across runs and platforms."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU torch generator seeded with :func:`stable_seed`."""
    return torch.Generator().manual_seed(stable_seed(*parts))


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().float().numpy()
