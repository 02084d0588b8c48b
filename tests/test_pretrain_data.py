"""Training data order: seeded epoch permutations, per-rank shards, preloaded == streamed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from eqbench.data import ImageDataset
from eqbench.train.data import PositionSampler, TrainData, mix_seed


class Numbered(ImageDataset):
    """Image ``i`` is filled with the value ``i`` (so batches show which images they hold)."""

    def __init__(self, n: int) -> None:
        self.name, self.split, self.classes = "numbered", "train", ["x"]
        self.labels = np.zeros(n, dtype=np.int64)
        self.groups = np.arange(n)

    def load(self, indices: Sequence[int], size: int) -> torch.Tensor:
        values = torch.tensor(list(indices), dtype=torch.uint8)
        return values.view(-1, 1, 1, 1).expand(-1, 3, size, size).clone()

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name}


def test_each_epoch_is_a_seeded_permutation() -> None:
    sampler = PositionSampler(10, seed=3)
    first, second = sampler.indices(0, 10), sampler.indices(10, 10)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second
    assert PositionSampler(10, seed=3).indices(7, 6) == first[7:] + second[:3]
    assert PositionSampler(10, seed=4).indices(0, 10) != first


def test_ranks_split_each_global_batch() -> None:
    dataset = Numbered(10)
    whole = TrainData(dataset, 4, seed=1, global_batch=6)
    ranks = [TrainData(dataset, 4, seed=1, global_batch=6, rank=r, world_size=2) for r in (0, 1)]
    for position in (0, 6, 12):
        shards = [r.step_indices(position) for r in ranks]
        assert len(shards[0]) == len(shards[1]) == 3
        assert shards[0] + shards[1] == whole.step_indices(position)


def test_streamed_batches_equal_preloaded_ones() -> None:
    dataset = Numbered(10)
    preloaded = TrainData(dataset, 4, seed=2, global_batch=4, preload_max_mb=1)
    streamed = TrainData(dataset, 4, seed=2, global_batch=4, preload_max_mb=0)
    assert preloaded.images is not None and streamed.images is None
    a = list(preloaded.batches(position=8, steps=3))
    b = list(streamed.batches(position=8, steps=3))
    assert len(a) == len(b) == 3
    for (x, x_aspect), (y, y_aspect) in zip(a, b, strict=True):
        assert x.shape == (4, 3, 4, 4) and x.dtype == torch.uint8
        assert torch.equal(x, y) and x_aspect is None and y_aspect is None
    assert [int(v) for v in a[0][0][:, 0, 0, 0]] == preloaded.sampler.indices(8, 4)


def test_mix_seed_separates_streams() -> None:
    seeds = {
        mix_seed(0, step, rank, purpose)
        for step in range(5)
        for rank in (0, 1)
        for purpose in (1, 2)
    }
    assert len(seeds) == 20 and all(0 <= s < 2**63 for s in seeds)
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)
