"""Sinkhorn–Knopp centring of the teacher's outputs (DINOv2, arXiv 2304.07193, section 4).

DINOv2 (Oquab et al., TMLR 2024; ``sinkhorn_knopp_teacher`` in ``dinov2/loss``) replaces DINO's
EMA centre and softmax by SwAV's batch normalisation (Caron et al., NeurIPS 2020, arXiv
2006.09882): ``Q = exp(g_t / τ_t)`` over the ``B`` rows (samples) and ``K`` columns (prototypes)
of the global batch is scaled alternately so that every prototype receives a total mass ``1/K``
and every sample ``1/B``; after the iterations (DINOv2: 3) the rows are rescaled to sum to 1 and
serve as the teacher's target distributions. Each sample's row sums to exactly 1; the prototype
marginals are ``B/K`` up to the error the last column step leaves.

**eqbench choice**: the global maximum of ``g_t / τ_t`` is subtracted before ``exp`` (it cancels
in the first normalisation), so large logits or small temperatures cannot overflow.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from eqbench.errors import EqbenchError
from eqbench.losses.distributed import distributed_world


def _all_reduce(x: Tensor, op: Any = dist.ReduceOp.SUM) -> Tensor:
    """``x`` reduced over processes in place (unchanged with one process)."""
    if distributed_world()[1] > 1:
        dist.all_reduce(x, op=op)
    return x


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, temperature: float, iterations: int = 3) -> Tensor:
    """Teacher targets ``(B, K)`` of logits ``(B, K)``, balanced over the prototypes.

    Under ``torch.distributed`` the sums run over the rows of every process (the global batch),
    as in DINOv2; processes may hold different numbers of rows (the masked patch tokens).

    Args:
        logits: ``(B, K)`` teacher outputs of this process (computed in fp32).
        temperature: ``τ_t``.
        iterations: Sinkhorn–Knopp iterations (DINOv2: 3).

    Returns:
        ``(B, K)`` non-negative, each row summing to 1.
    """
    if temperature <= 0 or iterations < 1:
        raise EqbenchError(
            f"Sinkhorn-Knopp needs temperature > 0 and iterations >= 1, got {temperature}, "
            f"{iterations}."
        )
    scores = logits.float() / temperature
    local_top = scores.max() if scores.numel() else scores.new_tensor(-torch.inf)
    top = _all_reduce(local_top.reshape(1), dist.ReduceOp.MAX)  # every process takes part
    q = torch.exp(scores - top).t()  # (K, B)
    n_prototypes = q.shape[0]
    n_samples = _all_reduce(q.new_tensor(float(q.shape[1])))  # B of the global batch
    q /= _all_reduce(q.sum())
    for _ in range(iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))  # each prototype: total mass 1/K
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)  # each sample: total mass 1/B
        q /= n_samples
    q *= n_samples  # each sample's column sums to 1
    return q.t()
