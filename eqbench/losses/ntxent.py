"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv 2002.05709, Eq. (1). For a batch of ``N`` pairs there are
``2N`` embeddings; each one's positive is the other view of its image and its ``2N − 2``
negatives are the other images' two views:

``ℓ(i, j) = −log exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ)``, with cosine ``sim``,
averaged over all ``2N`` anchors.

Temperature: the paper uses ``τ = 0.1`` on ImageNet (batch 4096) and ``τ = 0.5`` on CIFAR-10;
**eqbench default** ``τ = 0.2``, between the two, for the small batches of CPU-sized runs
(a config field; set 0.1 to follow the ImageNet recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.errors import EqbenchError
from eqbench.losses.distributed import distributed_world, gather_with_grad

#: eqbench default temperature (see the module docstring).
DEFAULT_TEMPERATURE = 0.2


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent loss (arXiv 2002.05709) on two batches of embeddings.

    Args:
        temperature: ``τ`` (eqbench default 0.2; paper 0.1 ImageNet, 0.5 CIFAR-10).
        gather_distributed: draw negatives from the embeddings of all processes, as SimCLR
            does across TPU cores; anchors stay this process's own.
    """

    def __init__(
        self, temperature: float = DEFAULT_TEMPERATURE, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        if not temperature > 1e-8:
            raise EqbenchError(f"NT-Xent temperature must be > 0, got {temperature}.")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """The NT-Xent loss (scalar).

        Args:
            z_a: ``(B, D)`` embeddings of the first views (need not be normalised).
            z_b: ``(B, D)`` embeddings of the second views; row ``i`` pairs with ``z_a[i]``.

        Raises:
            EqbenchError: shapes differ or are not 2-D.
        """
        if z_a.ndim != 2 or z_a.shape != z_b.shape:
            raise EqbenchError(
                f"NT-Xent needs two (B, D) embeddings of the same shape, got {tuple(z_a.shape)} "
                f"and {tuple(z_b.shape)}."
            )
        batch = z_a.shape[0]
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        rank = 0
        all_a, all_b = z_a, z_b
        if self.gather_distributed:
            rank, _ = distributed_world()
            all_a, all_b = gather_with_grad(z_a), gather_with_grad(z_b)  # (W·B, D)
        labels = torch.arange(batch, device=z_a.device) + rank * batch  # (B,)
        # An anchor must not be its own negative: mask the same-view column of its own index.
        self_mask = F.one_hot(labels, all_a.shape[0]).bool()  # (B, W·B)
        inv_t = 1.0 / self.temperature
        logits_ab = z_a @ all_b.T * inv_t  # (B, W·B): positives on column `labels`
        logits_aa = (z_a @ all_a.T * inv_t).masked_fill(self_mask, float("-inf"))
        logits_ba = z_b @ all_a.T * inv_t
        logits_bb = (z_b @ all_b.T * inv_t).masked_fill(self_mask, float("-inf"))
        logits = torch.cat(
            [torch.cat([logits_ab, logits_aa], dim=1), torch.cat([logits_ba, logits_bb], dim=1)]
        )  # (2B, 2·W·B)
        return F.cross_entropy(logits, labels.repeat(2))
