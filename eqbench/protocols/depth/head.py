"""dinov2's linear depth head on frozen patch tokens, and its training.

The head is dinov2's ``BNHead`` as its linear depth configs build it
(``dinov2/eval/depth/models/decode_heads/linear_head.py``; ``dinov2/hub/depthers.py`` lines
36-67): the CLS token is concatenated to every patch token of each chosen layer
(``_forward_feature``, lines 66-79; "lin. 1" = last layer, "lin. 4" = four layers), the maps are
upsampled bilinearly ×4 (``upsample=4``, ``resize_concat``, lines 37-49; done after the
convolution here, which gives the same map), and a 1×1 convolution (no BatchNorm: it is
commented out, line 81) gives either 256 logits over depth bins uniformly spaced in
``[min_depth, max_depth]`` (``classify=True``, ``bins_strategy='UD'``), made a distribution by
the "linear" normalisation (ReLU, + 0.1, divided by the sum) whose expectation is the depth
(``decode_head.py`` lines 155-177), or one value ``ReLU(x) + min_depth`` (regression, line 183).
The prediction is resized bilinearly to the ground truth's size for the loss and the evaluation
(``decode_head.py`` line 190). Training follows the NYU linear config: AdamW (lr 5e-3 there,
weight decay 0.01), linear warm-up then cosine decay, gradient clipping at 35, SigLoss (warm-up
100 steps) + 0.5 × gradient loss.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.protocols.depth.metrics import gradient_loss, sig_loss

log = logging.getLogger(__name__)

NORM_STRATEGIES = ("linear", "softmax", "sigmoid")


class LinearDepthHead(nn.Module):
    """Upsample ×``upsample``, 1×1 convolution, bins or regression (dinov2's ``BNHead``).

    Args:
        in_dim: channels of the input map (token width × layers, doubled with the CLS token).
        min_depth / max_depth: range of the bins (and the floor of regression).
        classify: depth as the expectation over ``n_bins`` uniform bins, else regression.
        n_bins: number of bins (dinov2: 256).
        norm_strategy: ``linear`` (dinov2), ``softmax`` or ``sigmoid``.
        upsample: factor of the bilinear upsampling before the convolution (dinov2: 4).
    """

    def __init__(
        self,
        in_dim: int,
        min_depth: float,
        max_depth: float,
        classify: bool = True,
        n_bins: int = 256,
        norm_strategy: str = "linear",
        upsample: int = 4,
    ) -> None:
        super().__init__()
        if norm_strategy not in NORM_STRATEGIES:
            raise ValueError(f"norm_strategy must be one of {NORM_STRATEGIES}")
        self.min_depth, self.max_depth = min_depth, max_depth
        self.classify, self.norm_strategy, self.upsample = classify, norm_strategy, upsample
        self.conv = nn.Conv2d(in_dim, n_bins if classify else 1, kernel_size=1)
        self.register_buffer("bins", torch.linspace(min_depth, max_depth, n_bins))

    def output_size(self, grid: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the depth map for a token grid ``(h, w)``."""
        return grid[0] * self.upsample, grid[1] * self.upsample

    def forward(self, feats: Tensor) -> Tensor:
        """Depth ``(B, h·upsample, w·upsample)`` in metres from features ``(B, C, h, w)``."""
        h, w = feats.shape[-2:]
        # conv1x1(upsample(x)) == upsample(conv1x1(x)): both are linear, the 1x1 convolution
        # acts on each pixel and bilinear weights sum to 1 (so the bias passes through); the
        # convolution is done on the token grid, upsample² times fewer pixels.
        logit = F.interpolate(
            self.conv(feats),
            size=(h * self.upsample, w * self.upsample),
            mode="bilinear",
            align_corners=False,
        )  # (B, K, H', W')
        bins: Tensor = self.bins  # type: ignore[assignment]
        return depth_from_logits(logit, bins, self.classify, self.norm_strategy, self.min_depth)


def depth_from_logits(
    logit: Tensor,
    bins: Tensor,
    classify: bool,
    norm_strategy: str,
    min_depth: float,
    scale_up: bool = False,
) -> Tensor:
    """Depth ``(B, H, W)`` from a head's output ``(B, K, H, W)`` (dinov2 ``depth_pred``,
    ``decode_head.py`` lines 155-184): the expectation over the ``K`` bins of the normalised
    scores, or for regression (``K = 1``) ``ReLU(x) + min_depth`` or, with ``scale_up``,
    ``sigmoid(x) · max_depth`` (the top bin)."""
    if not classify:
        if scale_up:
            return torch.sigmoid(logit[:, 0]) * bins[-1]
        return torch.relu(logit[:, 0]) + min_depth
    if norm_strategy == "linear":
        prob = torch.relu(logit) + 0.1
        prob = prob / prob.sum(dim=1, keepdim=True)
    elif norm_strategy == "softmax":
        prob = torch.softmax(logit, dim=1)
    else:
        prob = torch.sigmoid(logit)
        prob = prob / prob.sum(dim=1, keepdim=True)
    return torch.einsum("bkhw,k->bhw", prob, bins)


def predict(head: nn.Module, feats: Tensor, size: tuple[int, int]) -> Tensor:
    """The head's depth ``(B, H, W)`` resized bilinearly to ``size``."""
    out = head(feats)[:, None]  # (B, 1, h', w')
    return F.interpolate(out, size=size, mode="bilinear", align_corners=False)[:, 0]


@dataclass(frozen=True)
class DepthTraining:
    """How the head is trained (never tuned on the test split).

    Attributes:
        iterations: optimiser steps.
        batch_size: images per step.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW's decoupled weight decay.
        warmup_fraction: share of ``iterations`` with a linear warm-up from ``lr · 1e-3``
            (the config: 12,800 of 38,400 iterations), then cosine decay.
        sigloss_warmup: steps with the SigLoss warm-up form (the reference: 100).
        grad_loss_weight: weight of the gradient loss (the config: 0.5).
        clip_norm: gradient clipping (the config: 35).
    """

    iterations: int = 1000
    batch_size: int = 16
    lr: float = 5e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 1 / 3
    sigloss_warmup: int = 100
    grad_loss_weight: float = 0.5
    clip_norm: float = 35.0


class HeadTrainingOptions:
    """The head-training options a depth task's config holds, as a :class:`DepthTraining`.

    A base of the tasks' config dataclasses: they declare these fields with their own defaults.
    """

    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    grad_loss_weight: float

    def training(self) -> DepthTraining:
        """How the head is trained; the options not in the config keep their defaults."""
        return DepthTraining(
            iterations=self.iterations,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            grad_loss_weight=self.grad_loss_weight,
        )


def learning_rate(step: int, cfg: DepthTraining) -> float:
    """mmcv's linear warm-up (ratio 1e-3) then cosine annealing to 0."""
    warm = int(cfg.warmup_fraction * cfg.iterations)
    cosine = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.iterations))
    if step < warm:
        return cosine * (1 - (1 - step / warm) * (1 - 1e-3))
    return cosine


def train_depth_head(
    head: nn.Module,
    feats: Tensor,
    depth: Tensor,
    valid: Tensor,
    cfg: DepthTraining,
    seed: int,
    device: torch.device,
) -> nn.Module:
    """Fit ``head`` (a depth head: features ``(B, C, h, w)`` to depth) on frozen features.

    Args:
        head: an untrained head (moved to ``device``).
        feats: ``(N, C, h, w)`` features of the training images.
        depth: ``(N, H, W)`` ground truth in metres at the size the loss compares at.
        valid: ``(N, H, W)`` bool, the pixels with ground truth (within the depth range).
        cfg: optimiser settings.
        seed: seeds the batch order (the head is initialised by the caller).
        device: where to train.
    """
    head = head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    size = (int(depth.shape[-2]), int(depth.shape[-1]))
    for step in range(cfg.iterations):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg)
        idx = torch.randint(len(feats), (min(cfg.batch_size, len(feats)),), generator=gen)
        x = feats[idx].to(device)  # (B, C, h, w)
        gt, ok = depth[idx].to(device), valid[idx].to(device)  # (B, H, W)
        if not bool(ok.any()):
            continue
        pred = predict(head, x, size)  # (B, H, W)
        loss = sig_loss(pred, gt, ok, warm_up=step < cfg.sigloss_warmup)
        if cfg.grad_loss_weight:
            loss = loss + cfg.grad_loss_weight * gradient_loss(pred, gt, ok)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(head.parameters(), cfg.clip_norm)
        opt.step()
        if step % 100 == 0 or step == cfg.iterations - 1:
            log.debug("depth head step %d loss %.4f", step, loss.item())
    return head.eval()
