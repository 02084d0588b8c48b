"""Monocular depth: the evaluation mask, the error measures and the training losses.

Conventions of the depth toolbox dinov2's depth evaluation is built on
(zhyever/Monocular-Depth-Estimation-Toolbox, whose ``depth/`` package dinov2 ships as
``dinov2/eval/depth``):

* **Valid pixels** (``depth/datasets/nyu.py`` and ``kitti.py``, ``eval_mask``): ground truth
  strictly between ``min_depth`` and ``max_depth`` (NYU 1e-3 and 10 m, KITTI 1e-3 and 80 m),
  inside the dataset's crop: NYU's **eigen crop** rows 45:471, columns 41:601 of the 480×640 map;
  KITTI's **Garg crop** rows ``int(0.40810811 H):int(0.99189189 H)``, columns
  ``int(0.03594771 W):int(0.96405229 W)`` (of the 352×1216 KB crop).
* **Errors** (``depth/core/evaluation/metrics.py``, ``calculate``), per image over its valid
  pixels: δ_k = fraction with ``max(gt/pred, pred/gt) < 1.25^k``; AbsRel = mean ``|gt − pred| /
  gt``; RMSE = sqrt(mean ``(gt − pred)²``); log10 = mean ``|log10 gt − log10 pred|`` (a mean
  absolute error, as BTS and the toolbox compute it, not a root mean square). The dataset's score
  is the mean over images of each per-image value (``pre_eval_to_metrics``: ``nanmean``; an image
  without a valid pixel is left out).
* **Losses** (``dinov2/eval/depth/models/losses``): the scale-invariant log loss of Eigen et al.
  2014 as AdaBins writes it (``sigloss.py`` lines 42-59) and the multi-scale gradient loss of
  MegaDepth (``gradientloss.py`` lines 33-63), weighted 1.0 and 0.5 as in dinov2's NYU linear
  head config (``dinov2_vitb14_nyu_linear_config.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: Crops of the evaluation mask (``none``: every valid pixel).
CROPS = ("eigen", "garg", "none")
#: NYU's eigen crop on the 480×640 depth map: ``(top, bottom, left, right)``
#: (toolbox ``depth/datasets/nyu.py``, ``eval_mask``: ``eval_mask[45:471, 41:601] = 1``).
EIGEN_CROP = (45, 471, 41, 601)
EIGEN_SIZE = (480, 640)
#: KITTI's Garg crop as fractions of the height and width (toolbox ``kitti.py``, ``eval_mask``).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
#: Names of the errors :func:`depth_errors` returns.
ERRORS = ("rmse", "abs_rel", "log10", "delta1", "delta2", "delta3")
#: ``eps`` of the reference losses ("avoid grad explode", ``sigloss.py`` line 35).
LOSS_EPS = 1e-3


def crop_mask(shape: tuple[int, int], crop: str) -> np.ndarray:
    """Bool ``(H, W)`` mask of the evaluation crop.

    ``eigen`` is defined on NYU's 480×640 maps; on maps of another size its bounds are scaled
    in proportion (``int(45 / 480 · H)``, ...), which gives the reference's indices at 480×640.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    if crop == "none":
        mask[:] = True
    elif crop == "eigen":
        top, bottom, left, right = EIGEN_CROP
        rows, cols = EIGEN_SIZE
        mask[
            int(top / rows * height) : int(bottom / rows * height),
            int(left / cols * width) : int(right / cols * width),
        ] = True
    elif crop == "garg":
        top_f, bottom_f, left_f, right_f = GARG_CROP
        mask[
            int(top_f * height) : int(bottom_f * height),
            int(left_f * width) : int(right_f * width),
        ] = True
    else:
        raise ValueError(f"unknown crop {crop!r}; use one of {CROPS}")
    return mask


def eval_mask(gt: np.ndarray, min_depth: float, max_depth: float, crop: str) -> np.ndarray:
    """Bool ``(H, W)``: the pixels of ``gt`` (metres) that are scored."""
    valid = (gt > min_depth) & (gt < max_depth)
    return valid & crop_mask((int(gt.shape[0]), int(gt.shape[1])), crop)


def depth_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The errors of one image over its scored pixels (1-D arrays of metres, ``pred > 0``).

    NaN for every error when there is no pixel (the toolbox's ``calculate``).
    """
    if gt.size == 0:
        return {name: math.nan for name in ERRORS}
    gt, pred = gt.astype(np.float64), pred.astype(np.float64)
    ratio = np.maximum(gt / pred, pred / gt)
    return {
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "log10": float(np.mean(np.abs(np.log10(gt) - np.log10(pred)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


class DepthScores:
    """Accumulates per-image errors; :meth:`summary` is their mean over images.

    Args:
        min_depth / max_depth: ground truth outside ``(min_depth, max_depth)`` is not scored.
        crop: the evaluation crop (:data:`CROPS`).
    """

    def __init__(self, min_depth: float, max_depth: float, crop: str) -> None:
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; use one of {CROPS}")
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        self.per_image: list[dict[str, float]] = []

    def add(self, gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        """Score one prediction ``(H, W)`` against its ground truth ``(H, W)`` (metres)."""
        if gt.shape != pred.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ")
        mask = eval_mask(gt, self.min_depth, self.max_depth, self.crop)
        errors = depth_errors(gt[mask], pred[mask])
        self.per_image.append(errors)
        return errors

    def summary(self) -> dict[str, float]:
        """Each error's mean over the images that had a scored pixel."""
        out = {}
        for name in ERRORS:
            values = np.array([e[name] for e in self.per_image], dtype=np.float64)
            finite = values[np.isfinite(values)]
            out[name] = float(finite.mean()) if finite.size else math.nan
        return out


def sig_loss(
    pred: Tensor, gt: Tensor, valid: Tensor, *, warm_up: bool = False, variance_focus: float = 0.15
) -> Tensor:
    """Scale-invariant log loss (dinov2 ``sigloss.py`` lines 42-59, after AdaBins).

    ``g = log(pred + eps) − log(gt + eps)`` over the valid pixels of the whole batch;
    ``sqrt(Var(g) + 0.15 · mean(g)²)`` with the unbiased variance of ``torch.var``; during the
    warm-up (the reference's first 100 steps) ``sqrt(0.15 · mean(g)²)``.

    Args:
        pred / gt: ``(B, H, W)`` depth in metres.
        valid: ``(B, H, W)`` bool, the pixels with ground truth.
    """
    g = torch.log(pred[valid] + LOSS_EPS) - torch.log(gt[valid] + LOSS_EPS)
    if warm_up:
        return torch.sqrt(variance_focus * g.mean() ** 2)
    return torch.sqrt(torch.var(g) + variance_focus * g.mean() ** 2)


def gradient_loss(pred: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """Multi-scale log-depth gradient loss (dinov2 ``gradientloss.py`` lines 33-63, MegaDepth).

    At strides 1, 2, 4 and 6 (the reference's ``[::2i]`` for i = 1..3), the log-depth error
    ``d = log(pred + eps) − log(gt + eps)`` (0 off the valid pixels) is differenced two pixels
    apart along rows and columns where both ends are valid; the absolute differences are summed
    and divided by the number of valid pixels at that stride. Computed image by image on the
    spatial axes and averaged over the batch. (The reference applies its ``[0:-2, :]`` indexing
    to the ``(B, 1, H, W)`` prediction, so it differences along the batch and channel axes,
    which is zero for the 2 images per GPU of its configs; this follows MegaDepth's intent.)

    Args:
        pred / gt: ``(B, H, W)`` depth in metres.
        valid: ``(B, H, W)`` bool.
    """
    total = pred.new_zeros(pred.shape[0])
    for stride in (1, 2, 4, 6):
        p, t = pred[:, ::stride, ::stride], gt[:, ::stride, ::stride]
        m = valid[:, ::stride, ::stride].to(pred.dtype)
        n = m.sum(dim=(1, 2))  # (B,)
        d = (torch.log(p + LOSS_EPS) - torch.log(t + LOSS_EPS)) * m
        v = torch.abs(d[:, :-2, :] - d[:, 2:, :]) * m[:, :-2, :] * m[:, 2:, :]
        h = torch.abs(d[:, :, :-2] - d[:, :, 2:]) * m[:, :, :-2] * m[:, :, 2:]
        edges = v.sum(dim=(1, 2)) + h.sum(dim=(1, 2))
        total = total + torch.where(n > 0, edges / n.clamp(min=1), torch.zeros_like(n))
    return total.mean()
