"""Part-parsing scores of propagated multi-class masks: mIoU from one confusion matrix.

As CropMAE's VIP evaluation computes it (alexandre-eymael/CropMAE
``downstreams/propagation/src/eval/eval_vip.py``, from the LIP/VIP toolkit): every scored frame
of every video adds its pixels to one confusion matrix (``fast_hist``, lines 43-45; ground-truth
values outside ``[0, n)``, such as void 255, are left out), the IoU of each class is
``diag / (gt + pred - diag)`` and mIoU is their mean over the classes whose union is not empty
(``np.nanmean``, lines 100-105). Pixel accuracy is ``diag.sum() / total`` (line 88).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Histogram size: every uint8 value but void (255).
N_VALUES = 255


def confusion(gt: np.ndarray, pred: np.ndarray, n: int = N_VALUES) -> np.ndarray:
    """``(n, n)`` counts of (ground truth, prediction) pairs, ground truth outside ``[0, n)``
    left out; predictions outside it are counted nowhere either."""
    if gt.shape != pred.shape:
        raise ValueError(f"annotations {gt.shape} and predictions {pred.shape} differ")
    keep = (gt >= 0) & (gt < n) & (pred >= 0) & (pred < n)
    index = n * gt[keep].astype(np.int64) + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=n * n).reshape(n, n)


@dataclass
class PartIoU:
    """One confusion matrix over all frames added.

    Attributes:
        hist: ``(N_VALUES, N_VALUES)`` counts, rows ground truth, columns prediction.
    """

    hist: np.ndarray = field(default_factory=lambda: np.zeros((N_VALUES, N_VALUES), np.int64))

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add frames ``(..., H, W)`` of integer class ids."""
        self.hist += confusion(np.asarray(gt), np.asarray(pred))

    def per_class(self) -> np.ndarray:
        """IoU per class value (NaN where neither ground truth nor prediction has it)."""
        diag = np.diag(self.hist).astype(np.float64)
        union = self.hist.sum(0) + self.hist.sum(1) - diag
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, diag / union, np.nan)

    def summary(self) -> dict[str, float]:
        """``{"miou", "pixel_acc"}`` (NaN before any pixel)."""
        total = int(self.hist.sum())
        if total == 0:
            return {"miou": math.nan, "pixel_acc": math.nan}
        return {
            "miou": float(np.nanmean(self.per_class())),
            "pixel_acc": float(np.diag(self.hist).sum() / total),
        }
