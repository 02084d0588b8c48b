"""Process-group set-up for multi-process runs launched by ``torchrun`` (pretraining and
``eqbench eval``).

When ``RANK`` and ``WORLD_SIZE`` are in the environment (``torchrun`` sets them, with
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) the default process group is initialised:
``nccl`` on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on the CPU. Otherwise the
run is a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from eqbench.device import resolve_device
from eqbench.errors import ConfigError, EqbenchError

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands.

    Attributes:
        rank: global rank (0 when single-process).
        world_size: number of processes.
        device: this process's device.
        owns_group: whether :func:`setup` initialised the process group (and must destroy it).
    """

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op when single-process)."""
        if self.distributed:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` when single-process)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0, ``None`` on the other ranks (what only
        rank 0 needs, without a copy on every rank)."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (``obj`` itself when single-process)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """The sum of every rank's ``tensor`` (same shape and dtype everywhere), on ``tensor``'s
        device; the reduction runs on this process's device (NCCL needs CUDA tensors)."""
        if not self.distributed:
            return tensor
        on_device = tensor.to(self.device, copy=True)
        dist.all_reduce(on_device)
        return on_device.to(tensor.device)


def launched_rank() -> int:
    """This process's global rank as ``torchrun`` (or submitit's export) set it, 0 when the run
    is a single process; readable before :func:`setup`."""
    return int(os.environ.get("RANK", "0"))


def setup(device_name: str) -> DistContext:
    """Initialise the process group if launched by ``torchrun``; pick this process's device."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext(0, 1, resolve_device(device_name))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise EqbenchError(
                f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible). "
                "Launch at most one process per GPU (torchrun --nproc_per_node=<GPUs>)."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    logger.info("process %d of %d on %s", rank, world, device)
    return DistContext(rank, world, device, owns_group=owns)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def global_batch_share(total: int, ctx: DistContext | None, what: str) -> tuple[int, int]:
    """``(first, last)`` positions of this process's share of each global batch of ``total``
    images: a contiguous ``total / world size`` of it, so the total batch, not the per-process
    one, is what a setting means at any scale (``(0, total)`` for one process).

    Raises:
        ConfigError: ``total`` is not divisible by the world size (``what`` names the model).
    """
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    if total % world:
        raise ConfigError(
            f"The {what}'s batch of {total} images cannot be split evenly over the {world} "
            "processes of this launch; the total batch is kept at any scale. Launch a number of "
            f"processes that divides {total}, or --set batch_size=<a multiple of {world}>."
        )
    per_rank = total // world
    return rank * per_rank, (rank + 1) * per_rank
