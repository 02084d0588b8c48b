"""The KoLeo regulariser of DINOv2 (Oquab et al., TMLR 2024, arXiv 2304.07193, section 4).

Kozachenko–Leonenko differential-entropy estimator (Sablayrolles et al., "Spreading vectors for
similarity search", ICLR 2019, arXiv 1806.03198), as DINOv2 uses it (``dinov2/loss/koleo_loss.py``):
ℓ2-normalise the ``n`` features of a batch, find each one's nearest neighbour among the others,
and minimise ``L = −(1/n) Σ_i log(d_i + ε)`` with ``d_i = ‖x_i − x_{nn(i)}‖``. It spreads the
features uniformly over the batch. DINOv2 applies it per process and per global crop to the
student's CLS features (before the head), weight 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.errors import EqbenchError


def nearest_neighbours(x: Tensor) -> Tensor:
    """Index of each row's nearest other row by inner product ``(n,)`` (rows ℓ2-normalised)."""
    dots = x @ x.t()  # (n, n)
    dots.fill_diagonal_(-torch.inf)  # never one's own neighbour
    return dots.argmax(dim=1)


class KoLeoLoss(nn.Module):
    """``−mean_i log(‖x_i − x_nn(i)‖ + ε)`` on ℓ2-normalised features.

    Args:
        eps: ``ε`` of the normalisation, of the distance (added to the difference, as
            :func:`torch.nn.functional.pairwise_distance`) and of the log (DINOv2: 1e-8).
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, features: Tensor) -> Tensor:
        """The loss of one batch.

        Args:
            features: ``(n, D)`` features, ``n >= 2`` (computed in fp32).

        Returns:
            A scalar; the gradient flows through both ends of every nearest-neighbour pair.
        """
        if features.ndim != 2 or features.shape[0] < 2:
            raise EqbenchError(
                f"KoLeoLoss needs a (n >= 2, D) batch, got shape {tuple(features.shape)}."
            )
        x = F.normalize(features.float(), p=2, dim=-1, eps=self.eps)  # (n, D)
        with torch.no_grad():
            idx = nearest_neighbours(x)  # (n,)
        distances = F.pairwise_distance(x, x[idx], p=2, eps=self.eps)  # (n,)
        return -torch.log(distances + self.eps).mean()
