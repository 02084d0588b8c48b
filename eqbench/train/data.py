"""Deterministic, resumable training data: seeded epoch permutations addressed by position.

The *data position* counts the images the whole run (all processes) has consumed. Position ``p``
is image ``perm_e[p mod n]`` of epoch ``e = p div n``, with ``perm_e`` a permutation seeded by
``(seed, e)``. A step with global batch ``G`` covers positions ``[p, p + G)``; process ``r`` of
``W`` takes the ``r``-th slice of ``G / W`` of them. So the data order depends on the seed only,
not on when the run was interrupted, and resuming at a saved position continues it exactly.

Images are loaded as ``size`` squares: centre squares, or (``whole``) each image whole, resized to
the square, with its aspect ratio beside it so that the views are cropped from the full image
(:meth:`~eqbench.data.ImageDataset.load_whole`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from eqbench.data import ImageDataset

logger = logging.getLogger(__name__)

#: Images loaded per call when preloading.
PRELOAD_CHUNK = 256


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (sha256 of their decimal form): independent streams for
    ``(seed, step, rank, purpose)`` tuples."""
    blob = ":".join(str(int(v)) for v in values).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


class PositionSampler:
    """Maps data positions to dataset indices (see the module docstring).

    Args:
        n: dataset size.
        seed: run seed.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self._perms: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        """``(n,)`` int64 permutation of ``epoch`` (the last few are cached)."""
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A))
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> list[int]:
        """Dataset indices at positions ``start … start + count − 1``."""
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.n)
            out.append(int(self.permutation(epoch)[offset]))
        return out


#: A batch: uint8 images ``(b, 3, S, S)`` and the width / height of their sources ``(b,)``
#: (``None`` for centre squares).
Batch = tuple[Tensor, Tensor | None]


def load_batch(dataset: ImageDataset, indices: Sequence[int], size: int, whole: bool) -> Batch:
    """Images ``indices`` as centre squares, or whole with their aspect ratios."""
    if whole:
        images, aspect = dataset.load_whole(list(indices), size)
        return images.contiguous(), aspect
    return dataset.load(list(indices), size).contiguous(), None


class _Images(Dataset[Batch]):
    """Map-style dataset whose keys are lists of indices (one key = one per-process batch)."""

    def __init__(self, dataset: ImageDataset, size: int, whole: bool) -> None:
        self.dataset = dataset
        self.size = size
        self.whole = whole

    def __getitem__(self, indices: Sequence[int]) -> Batch:
        return load_batch(self.dataset, indices, self.size, self.whole)


class TrainData:
    """This process's uint8 batches, step by step.

    Args:
        dataset: the training images.
        size: side at which images are loaded.
        seed: run seed (data order).
        global_batch: images per step over all processes.
        rank: this process's rank.
        world_size: number of processes (must divide ``global_batch``).
        preload_max_mb: preload the whole dataset when it fits in this many MiB.
        num_workers: loader processes when not preloaded.
        whole: load each image whole (resized to the square) with its aspect ratio, instead of
            its centre square.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        size: int,
        *,
        seed: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        preload_max_mb: int = 1024,
        num_workers: int = 0,
        whole: bool = False,
    ) -> None:
        self.dataset = dataset
        self.size = size
        self.whole = whole
        self.sampler = PositionSampler(len(dataset), seed)
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.num_workers = num_workers
        self.images: Tensor | None = None
        self.aspect: Tensor | None = None
        megabytes = len(dataset) * 3 * size * size / 2**20
        if megabytes <= preload_max_mb:
            self.images, self.aspect = self._preload()

    def _preload(self) -> Batch:
        n = len(self.dataset)
        logger.info("preloading %d images at %d px", n, self.size)
        chunks = [
            load_batch(self.dataset, range(i, min(n, i + PRELOAD_CHUNK)), self.size, self.whole)
            for i in range(0, n, PRELOAD_CHUNK)
        ]
        images = torch.cat([c[0] for c in chunks])  # (n, 3, S, S) uint8
        aspects = [c[1] for c in chunks if c[1] is not None]
        return images, torch.cat(aspects) if self.whole else None

    def step_indices(self, position: int) -> list[int]:
        """This process's dataset indices for the step starting at ``position``."""
        start = position + self.rank * self.local_batch
        return self.sampler.indices(start, self.local_batch)

    def batches(self, position: int, steps: int) -> Iterator[Batch]:
        """``steps`` batches ``(images (b, 3, S, S) uint8, aspect (b,) or None)``, the first at
        data ``position``."""
        keys = (self.step_indices(position + i * self.global_batch) for i in range(steps))
        if self.images is not None:
            images, aspect = self.images, self.aspect
            return (
                (images[torch.tensor(k)], None if aspect is None else aspect[torch.tensor(k)])
                for k in keys
            )
        loader = DataLoader(
            _Images(self.dataset, self.size, self.whole),
            sampler=keys,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
        )
        return iter(loader)
