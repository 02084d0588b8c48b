"""ViTPose's heatmap decoders on frozen patch tokens, the heatmap loss, and their training.

ViTPose (Xu et al., NeurIPS 2022, "ViTPose: Simple Vision Transformer Baselines for Human Pose
Estimation") reads the last block's patch-token map and decodes it with one of two light heads,
both ``TopdownHeatmapSimpleHead`` (ViTAE-Transformer/ViTPose
``mmpose/models/heads/topdown_heatmap_simple_head.py``):

- ``simple`` (``ViTPose_*_simple_coco_256x192.py``, lines 59-68: ``num_deconv_layers=0``,
  ``upsample=4``, ``final_conv_kernel=3``): ReLU on the features, bilinear upsampling ×4
  (``_transform_inputs``, lines 278-287), a 3×3 convolution to K heatmaps (lines 130-144);
- ``classic`` (``ViTPose_*_mpii_256x192.py``, lines 49-57: ``num_deconv_layers=2``, filters
  256, kernels 4, ``final_conv_kernel=1``): two ConvTranspose 4×4 stride 2 (padding 1, no
  bias) + BatchNorm + ReLU (``_make_deconv_layer``, lines 306-337; mmpose 1.x ``HeatmapHead.
  _make_deconv_layers``, ``heatmap_heads/heatmap_head.py`` lines 155-190), then a 1×1
  convolution to K heatmaps.

Both give maps 4× the token grid (64×64 for a 256 px crop at patch 16) and are initialised as
``init_weights`` does (lines 339-350: normal std 0.001, zero bias, BatchNorm weight 1). The loss
is mmpose's ``KeypointMSELoss`` with target weights (``models/losses/heatmap_loss.py``, lines
36-70): squared error per heatmap cell, each joint's maps multiplied by its weight (0 for
unannotated or invisible joints), mean over all cells. Training follows the MPII config (Adam,
lr 5e-4, linear warm-up from 0.001 × lr, step decay ×0.1 at 170/210 and 200/210 of training).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.protocols.pose.metrics import encode_heatmaps

log = logging.getLogger(__name__)

DECODERS = ("simple", "classic")


class PoseHead(nn.Module):
    """ViTPose's ``simple`` or ``classic`` decoder from a token map to K heatmaps.

    Args:
        in_dim: channels of the token map.
        num_joints: heatmaps out (MPII: 16).
        decoder: ``simple`` (ReLU, bilinear ×4, 3×3 conv) or ``classic`` (2 × deconv 4×4 s2 +
            BN + ReLU, 1×1 conv).
        deconv_filters: channels of the classic decoder's deconvolutions (ViTPose: 256).
    """

    def __init__(
        self, in_dim: int, num_joints: int, decoder: str = "simple", deconv_filters: int = 256
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}")
        self.decoder = decoder
        layers: list[nn.Module] = []
        if decoder == "classic":
            channels = in_dim
            for _ in range(2):
                layers += [
                    nn.ConvTranspose2d(
                        channels,
                        deconv_filters,
                        4,
                        stride=2,
                        padding=1,
                        output_padding=0,
                        bias=False,
                    ),
                    nn.BatchNorm2d(deconv_filters),
                    nn.ReLU(inplace=True),
                ]
                channels = deconv_filters
            self.deconv = nn.Sequential(*layers)
            self.final = nn.Conv2d(channels, num_joints, kernel_size=1)
        else:
            self.deconv = nn.Sequential()
            self.final = nn.Conv2d(in_dim, num_joints, kernel_size=3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d | nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, feats: Tensor) -> Tensor:
        """Heatmaps ``(B, K, 4h, 4w)`` from a token map ``(B, C, h, w)``."""
        if self.decoder == "simple":
            h, w = feats.shape[-2:]
            x = F.interpolate(
                F.relu(feats), size=(4 * h, 4 * w), mode="bilinear", align_corners=False
            )
        else:
            x = self.deconv(feats)
        return self.final(x)


def keypoint_mse_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """mmpose's ``KeypointMSELoss`` with keypoint-wise target weights.

    Args:
        pred / target: ``(B, K, H, W)`` heatmaps.
        weights: ``(B, K)``; 0 leaves a joint's map out of the sum (not of the mean).
    """
    return ((pred - target) ** 2 * weights[:, :, None, None]).mean()


@dataclass(frozen=True)
class PoseTraining:
    """How the head is trained (never tuned on the test split).

    Attributes:
        iterations: optimiser steps.
        batch_size: crops per step.
        lr: peak learning rate (Adam; ViTPose's MPII config: 5e-4).
        weight_decay: Adam's L2 penalty (the config: none).
        warmup_fraction: share of ``iterations`` with a linear warm-up from ``lr · 1e-3``
            (the config: 500 iterations).
    """

    iterations: int = 1000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05


def learning_rate(step: int, cfg: PoseTraining) -> float:
    """mmcv's linear warm-up (ratio 1e-3), then ×0.1 at 170/210 and again at 200/210 of the
    run (the config's ``step=[170, 200]`` of 210 epochs)."""
    lr = cfg.lr * (0.1 ** sum(step >= cfg.iterations * m / 210 for m in (170, 200)))
    warm = int(cfg.warmup_fraction * cfg.iterations)
    if step < warm:
        return lr * (1 - (1 - step / warm) * (1 - 1e-3))
    return lr


def heatmap_batch(
    keypoints: np.ndarray,
    visible: np.ndarray,
    heatmap_size: tuple[int, int],
    input_size: tuple[int, int],
    sigma: float,
) -> tuple[Tensor, Tensor]:
    """Targets ``(B, K, H, W)`` and weights ``(B, K)`` of keypoints ``(B, K, 2)`` in input
    pixels (:func:`~eqbench.protocols.pose.metrics.encode_heatmaps` per person)."""
    pairs = [
        encode_heatmaps(points, vis, heatmap_size, input_size, sigma)
        for points, vis in zip(keypoints, visible, strict=True)
    ]
    maps = torch.from_numpy(np.stack([m for m, _ in pairs]))
    return maps, torch.from_numpy(np.stack([w for _, w in pairs]))


def train_pose_head(
    head: PoseHead,
    feats: Tensor,
    keypoints: np.ndarray,
    visible: np.ndarray,
    input_size: tuple[int, int],
    sigma: float,
    cfg: PoseTraining,
    seed: int,
    device: torch.device,
) -> PoseHead:
    """Fit ``head`` on frozen features; each batch's heatmap targets are made as it is drawn
    (a split's worth of 64 × 64 maps would not fit in memory at MPII's size).

    Args:
        head: an untrained head (moved to ``device``).
        feats: ``(N, C, h, w)`` token maps of the training crops.
        keypoints: ``(N, K, 2)`` joints in crop pixels.
        visible: ``(N, K)`` bool.
        input_size: ``(H, W)`` of the crops.
        sigma: Gaussian of the targets in heatmap cells.
        cfg: optimiser settings.
        seed: seeds the batch order (the head is initialised by the caller).
        device: where to train.
    """
    head = head.to(device).train()
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    heat = (4 * int(feats.shape[-2]), 4 * int(feats.shape[-1]))
    for step in range(cfg.iterations):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg)
        idx = torch.randint(len(feats), (min(cfg.batch_size, len(feats)),), generator=gen)
        x = feats[idx].to(device)  # (B, C, h, w)
        rows = idx.numpy()
        target, weight = heatmap_batch(keypoints[rows], visible[rows], heat, input_size, sigma)
        loss = keypoint_mse_loss(head(x), target.to(device), weight.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.iterations - 1:
            log.debug("pose head step %d loss %.3e", step, loss.item())
    return head.eval()
