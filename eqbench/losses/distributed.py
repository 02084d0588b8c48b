"""Gathering embeddings across processes with gradients, for losses computed on the global batch.

VICReg (Bardes et al., ICLR 2022, arXiv 2105.04906) computes its variance and covariance terms
on the embeddings of *all* GPUs, and SimCLR (Chen et al., ICML 2020, arXiv 2002.05709) draws its
negatives from the whole batch across cores. :func:`gather_with_grad` follows the official
VICReg code's ``FullGatherLayer``: the forward pass all-gathers, the backward pass all-reduces
(sums) the gradients of every rank and hands each rank the slice of its own inputs. Together
with DistributedDataParallel's gradient averaging this gives the gradient of the mean over ranks
of each rank's loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _FullGather(torch.autograd.Function):
    """All-gather with a gradient: forward stacks every rank's tensor, backward sums the
    incoming gradients over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> tuple[Tensor, ...]:
        output = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(output, x.contiguous())
        return tuple(output)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> Tensor:
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``(B, ...)`` of every rank along dim 0 → ``(W·B, ...)``.

    Without an initialised process group (or with one process) ``x`` is returned unchanged. All
    ranks must pass tensors of the same shape.
    """
    _, world = distributed_world()
    if world == 1:
        return x
    parts: tuple[Tensor, ...] = _FullGather.apply(x)
    return torch.cat(parts, dim=0)
