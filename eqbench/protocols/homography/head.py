"""Homography estimation from frozen features (S-COCO after DeTone, Malisiewicz & Rabinovich 2016,
"Deep Image Homography Estimation", arXiv 1606.03798).

Pair generation: in an image of side ``C``, take the ``P × P`` patch at top-left ``t`` (corners
``c_k``), move each corner by ``δ_k ~ U[-ρ, ρ]²`` and let ``H`` be the homography sending the
patch's own corners ``(0, 0), (P-1, 0), (P-1, P-1), (0, P-1)`` to ``c_k + δ_k`` (four-point DLT,
solved in float64). Patch A is the plain crop, patch B samples the image at ``H u`` for each patch
pixel ``u`` (bilinear, pixel centres at integer coordinates): B is what the quadrilateral
``c + δ`` looks like when warped to a square. The task is to recover the 8 numbers ``δ`` from
(A, B); the score is the mean corner error ``mean_k ||δ̂_k − δ_k||₂`` in pixels. DeTone's recipe
is ``P = 128``, ``ρ = 32`` in 320 × 240 images; eqbench scales it to ``P = image_size``,
``ρ = P / 4``, ``C = 2P``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


def patch_corners(size: int) -> Tensor:
    """Corners ``(4, 2)`` of a ``size`` patch as ``(x, y)``: TL, TR, BR, BL (pixel centres)."""
    s = float(size - 1)
    return torch.tensor([[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]], dtype=torch.float64)


def homography_dlt(src: Tensor, dst: Tensor) -> Tensor:
    """The homographies ``(B, 3, 3)`` (``H[2, 2] = 1``) with ``H src_k ∝ dst_k`` for 4 points.

    Args:
        src: ``(B, 4, 2)`` points ``(x, y)``.
        dst: ``(B, 4, 2)`` their images.
    """
    src, dst = src.double(), dst.double()
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)  # (B, 4, 8)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (B, 8, 8)
    b = torch.cat([u, v], dim=1)  # (B, 8)
    h = torch.linalg.solve(a, b)  # (B, 8)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(-1, 3, 3)


def apply_homography(h: Tensor, points: Tensor) -> Tensor:
    """``(B, P, 2)`` points mapped by ``(B, 3, 3)`` homographies."""
    ones = torch.ones_like(points[..., :1])
    mapped = torch.cat([points, ones], dim=-1) @ h.transpose(1, 2)  # (B, P, 3)
    return mapped[..., :2] / mapped[..., 2:]


def warp_patch(images: Tensor, h: Tensor, size: int) -> Tensor:
    """Sample ``images`` ``(B, C, S, S)`` at ``h u`` for each pixel ``u`` of a ``size`` patch.

    Returns:
        ``(B, C, size, size)``, bilinear; pixel ``(i, j)`` of the output is the image at
        ``H (j, i, 1)``, with image pixel centres at integer coordinates.
    """
    b, _, height, width = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )  # fmt: skip
    grid = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).expand(b, -1, -1)
    pts = apply_homography(h.double(), grid)  # (B, size², 2) image coordinates
    norm = torch.stack([2 * pts[..., 0] / (width - 1) - 1, 2 * pts[..., 1] / (height - 1) - 1], -1)
    norm = norm.reshape(b, size, size, 2).to(images.dtype)
    return F.grid_sample(images, norm, mode="bilinear", padding_mode="border", align_corners=True)


@dataclass(frozen=True)
class PairParams:
    """Parameters of homography pairs: ``top_left (N, 2)`` and corner shifts ``delta (N, 4, 2)``."""

    top_left: Tensor
    delta: Tensor


def sample_pairs(n: int, context: int, patch: int, rho: float, gen: torch.Generator) -> PairParams:
    """Patch positions (keeping every perturbed corner inside the image) and corner shifts."""
    margin = math.ceil(rho)
    span = context - patch - 2 * margin
    if span < 0:
        raise ValueError(f"context {context} is too small for patch {patch} with rho {rho}")
    top_left = margin + torch.randint(span + 1, (n, 2), generator=gen)
    delta = (torch.rand((n, 4, 2), generator=gen, dtype=torch.float64) * 2 - 1) * rho
    return PairParams(top_left.double(), delta)


def make_pair_views(images: Tensor, params: PairParams, patch: int) -> tuple[Tensor, Tensor]:
    """Patches A (plain crops) and B (warped) ``(B, C, patch, patch)`` of float images."""
    corners = patch_corners(patch)[None] + params.top_left[:, None, :]  # (B, 4, 2)
    src = patch_corners(patch)[None].expand(len(images), -1, -1)
    h_a = homography_dlt(src, corners)
    h_b = homography_dlt(src, corners + params.delta)
    return warp_patch(images, h_a, patch), warp_patch(images, h_b, patch)


def mean_corner_error(pred: Tensor, target: Tensor) -> float:
    """Mean over pairs and corners of the Euclidean corner error; ``(N, 4, 2)`` in pixels."""
    return float((pred.double() - target.double()).norm(dim=-1).mean())


class HomographyHead(nn.Module):
    """Three 3×3 conv layers (BatchNorm, ReLU) on the concatenated patch-token maps of A and B,
    then a linear layer to the 8 corner shifts (in units of ``ρ``), initialised to zero. The first
    two convolutions have stride 2 while the map is at least 8 cells wide.

    Args:
        in_dim: channels of the concatenated maps (``2 D``).
        grid: ``(h, w)`` of the maps.
        hidden: conv width.
    """

    def __init__(self, in_dim: int, grid: tuple[int, int], hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(in_dim)]
        h, w = grid
        for i in range(3):
            # halve fine maps (pixel grids, small patches) down to about 4-7 cells, keeping
            # the head's cost independent of the backbone's patch size
            stride = 2 if min(h, w) >= 8 and i < 2 else 1
            layers += [
                nn.Conv2d(in_dim if i == 0 else hidden, hidden, 3, stride, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
            ]
            h, w = (h + stride - 1) // stride, (w + stride - 1) // stride
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(hidden * h * w, 8)
        # start at the identity homography (no shift), the prediction early stopping falls
        # back to when nothing generalises
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feats: Tensor) -> Tensor:
        """``(B, 2D, h, w)`` → corner shifts ``(B, 4, 2)``."""
        return self.fc(self.convs(feats).flatten(1)).reshape(-1, 4, 2)


@dataclass(frozen=True)
class HomographyTraining:
    """Head optimisation: AdamW with cosine decay, MSE on ``δ / ρ``, early stopping.

    Attributes:
        iterations: maximal optimiser steps.
        batch_size: pairs per step.
        lr / weight_decay: AdamW.
        hidden: conv width of the head.
        eval_every: steps between validation passes.
        patience: validation passes without improvement before stopping; the head returned is
            the one with the lowest validation error.
    """

    iterations: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 128
    eval_every: int = 50
    patience: int = 5


def train_homography_head(
    feats: Tensor,
    delta: Tensor,
    rho: float,
    cfg: HomographyTraining,
    seed: int,
    device: torch.device,
    val: tuple[Tensor, Tensor] | None = None,
) -> HomographyHead:
    """Fit a :class:`HomographyHead` on ``feats (N, 2D, h, w)`` to ``delta (N, 4, 2)`` pixels.

    With ``val = (feats, delta)`` (pairs from other source images than the training pairs), the
    validation corner error is measured every ``cfg.eval_every`` steps; training stops after
    ``cfg.patience`` passes without improvement and the best head is returned, so a head that
    only memorises its training pairs never beats predicting the validation mean.
    """
    torch.manual_seed(seed)
    head = HomographyHead(feats.shape[1], (feats.shape[2], feats.shape[3]), cfg.hidden).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    target = (delta / rho).float()
    best_err, best_state, stale = math.inf, copy.deepcopy(head.state_dict()), 0
    head.train()
    for step in range(cfg.iterations):
        for group in opt.param_groups:
            group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.iterations))
        idx = torch.randint(len(feats), (min(cfg.batch_size, len(feats)),), generator=gen)
        loss = F.mse_loss(head(feats[idx].to(device)), target[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = step == cfg.iterations - 1
        if val is not None and ((step + 1) % cfg.eval_every == 0 or last):
            err = mean_corner_error(predict_delta(head.eval(), val[0], rho, device), val[1])
            head.train()
            log.debug("homography head step %d loss %.4f val mce %.3f", step, loss.item(), err)
            if err < best_err:
                best_err, best_state, stale = err, copy.deepcopy(head.state_dict()), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        elif step % 200 == 0 or last:
            log.debug("homography head step %d loss %.4f", step, loss.item())
    if val is not None:
        head.load_state_dict(best_state)
    return head.eval()


@torch.inference_mode()
def predict_delta(head: HomographyHead, feats: Tensor, rho: float, device: torch.device) -> Tensor:
    """Predicted corner shifts ``(N, 4, 2)`` in pixels."""
    out = [head(feats[lo : lo + 256].to(device)).cpu() for lo in range(0, len(feats), 256)]
    return torch.cat(out).double() * rho
