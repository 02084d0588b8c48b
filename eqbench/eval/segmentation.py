"""Frozen-feature semantic segmentation: the linear head and mmseg's IoU metrics.

The head is dinov2's linear segmentation probe (Oquab et al. 2023, "linear" in their Table 5,
after the ``BNHead`` of mmseg): BatchNorm then a 1×1 convolution on the patch-token map
``(B, D, h, w)``, logits upsampled bilinearly to the label size, cross-entropy with an ignore
index. Metrics follow mmseg's ``IoUMetric``: from the confusion matrix over every scored pixel of
the test split, ``aAcc`` = correct / scored pixels, per-class accuracy = correct / pixels of that
class in the labels and IoU = intersection / union; ``mAcc`` and ``mIoU`` are ``nanmean`` s, so a
class absent from the labels is left out of ``mAcc`` and a class absent from both labels and
predictions is left out of ``mIoU`` (one predicted but absent from the labels counts, IoU 0).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.data.dense import IGNORE_INDEX

log = logging.getLogger(__name__)


def confusion_matrix(
    pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``(K, K)`` int64 counts, rows = label class, columns = predicted class.

    Pixels whose label is ``ignore_index`` (or outside ``0 .. K-1``) are not counted.
    """
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def segmentation_scores(confusion: Tensor | np.ndarray) -> dict[str, float]:
    """``aAcc``, ``mAcc`` and ``mIoU`` (fractions in [0, 1]) from a confusion matrix, as mmseg.

    Also returns ``n_classes_scored``: the classes that enter ``mIoU``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    label_area, pred_area = cm.sum(axis=1), cm.sum(axis=0)
    union = label_area + pred_area - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(label_area > 0, tp / label_area, np.nan)
    total = cm.sum()
    return {
        "aacc": float(tp.sum() / total) if total > 0 else float("nan"),
        "macc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "n_classes_scored": float(np.isfinite(iou).sum()),
    }


class LinearSegHead(nn.Module):
    """BatchNorm + 1×1 convolution on a patch-token map (dinov2's linear probe).

    Args:
        in_dim: token width ``D``.
        num_classes: number of scored classes ``K``.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_dim)
        self.conv = nn.Conv2d(in_dim, num_classes, kernel_size=1)

    def forward(self, feats: Tensor, size: tuple[int, int]) -> Tensor:
        """Logits ``(B, K, H, W)`` at ``size`` from features ``(B, D, h, w)``."""
        logits = self.conv(self.bn(feats))  # (B, K, h, w)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class HeadTraining:
    """How the head is trained (never tuned on the test split).

    Attributes:
        iterations: optimiser steps.
        batch_size: images per step.
        lr: peak learning rate (cosine decay to 0 over ``iterations``).
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9).
    """

    iterations: int = 500
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    optimizer: str = "adamw"


def train_linear_head(
    feats: Tensor,
    masks: Tensor,
    num_classes: int,
    cfg: HeadTraining,
    seed: int,
    device: torch.device,
) -> LinearSegHead:
    """Fit a :class:`LinearSegHead` on frozen features.

    Args:
        feats: ``(N, D, h, w)`` patch-token maps of the training images.
        masks: ``(N, H, W)`` labels with ``IGNORE_INDEX`` for unscored pixels.
        num_classes: ``K``.
        cfg: optimiser settings.
        seed: seeds the head's initialisation and the batch order.
        device: where to train.
    """
    torch.manual_seed(seed)
    head = LinearSegHead(feats.shape[1], num_classes).to(device)
    params = head.parameters()
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"optimizer must be adamw or sgd, not {cfg.optimizer!r}")
    gen = torch.Generator().manual_seed(seed)
    size = (masks.shape[-2], masks.shape[-1])
    head.train()
    for step in range(cfg.iterations):
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.iterations))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(feats), (min(cfg.batch_size, len(feats)),), generator=gen)
        x = feats[idx].to(device)  # (B, D, h, w)
        y = masks[idx].to(device).long()  # (B, H, W)
        loss = F.cross_entropy(head(x, size), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.iterations - 1:
            log.debug("seg head step %d loss %.4f", step, loss.item())
    return head.eval()


@torch.inference_mode()
def evaluate_head(
    head: LinearSegHead,
    feats: Tensor,
    masks: Tensor,
    num_classes: int,
    device: torch.device,
    batch_size: int = 64,
) -> dict[str, float]:
    """mIoU, mAcc and aAcc of ``head`` on ``(feats, masks)`` (see :func:`segmentation_scores`)."""
    size = (masks.shape[-2], masks.shape[-1])
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for lo in range(0, len(feats), batch_size):
        x = feats[lo : lo + batch_size].to(device)
        pred = head(x, size).argmax(dim=1)
        cm += confusion_matrix(pred, masks[lo : lo + batch_size].to(device), num_classes)
    return segmentation_scores(cm)
