"""DAVIS video object segmentation scores: J (region similarity), F (boundary accuracy), J&F.

As the DAVIS-2017 evaluation toolkit computes them for the semi-supervised task
(davisvideochallenge/davis2017-evaluation, Pont-Tuset et al. 2017; Perazzi et al. 2016 for the
definitions). References are to that repository's files at commit ``ac7c43f``:

* J of one object in one frame is the IoU of its ground-truth and predicted masks, 1 when both
  are empty (``davis2017/metrics.py``, ``db_eval_iou``, lines 6-37).
* F of one object in one frame is the F-measure of boundary precision and recall
  (``metrics.py``, ``f_measure``, lines 57-119): both masks become 1-pixel boundary maps
  (``_seg2bmap``, lines 122-178), a boundary pixel counts as matched when the other map has a
  boundary pixel within ``ceil(0.008 · diagonal)`` pixels (dilation with a disk of that radius,
  lines 77-93); precision and recall are 1 and 0 (or 0 and 1) when one map is empty, 1 and 1 when
  both are (lines 99-111).
* Per object, J and F are averaged over the frames scored: every frame but the first (given) and
  the last (``davis2017/evaluation.py`` line 85; ``utils.py`` ``db_statistics`` lines 135-161 take
  ``nanmean``). Objects are ids ``1 .. max(first annotation)`` (``davis.py`` line 93); void
  pixels (255) count as background (``davis.py`` lines 88-90; the semi-supervised evaluation
  passes no void mask, ``evaluation.py`` line 90).
* J-Mean and F-Mean average the per-object means over every object of every sequence, and
  J&F-Mean is their average (``evaluation_method.py`` line 43).

The dilation is computed here as a Euclidean distance transform: a pixel lies in the boundary map
dilated by ``disk(r)`` (offsets with ``dx² + dy² ≤ r²``, ``skimage.morphology.disk``) exactly when
its distance to the nearest boundary pixel is at most ``r``. Tests check the scores against masks
worked out by hand and against a direct dilation with ``skimage.morphology.disk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

#: Boundary tolerance as a fraction of the image diagonal (``metrics.py`` line 40).
BOUND_TH = 0.008
#: Value of void pixels in DAVIS annotations; scored as background.
VOID = 255


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J: intersection over union of two boolean masks ``(H, W)``; 1 when both are empty."""
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} and {pred.shape}")
    gt, pred = gt.astype(bool), pred.astype(bool)
    union = int(np.count_nonzero(gt | pred))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(gt & pred)) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel boundary of a boolean mask ``(H, W)``, offset half a pixel towards the origin.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour;
    in the last row only the right neighbour counts, in the last column only the lower one, and
    the bottom-right pixel never counts (``_seg2bmap``, ``metrics.py`` lines 154-165, after
    D. Martin's BSDS code).
    """
    seg = mask.astype(bool)
    right = np.zeros_like(seg)
    down = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ down[:, -1]
    bmap[-1, -1] = False
    return bmap


def boundary_tolerance(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Matching radius in pixels: ``ceil(bound_th · ‖(H, W)‖)`` (``metrics.py`` lines 77-78)."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(shape[0], shape[1]))


def _within(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Euclidean distance ``radius`` of a pixel of ``bmap`` (``bmap`` dilated by
    a disk of that radius)."""
    if not bmap.any():
        return np.zeros_like(bmap)
    return ndimage.distance_transform_edt(~bmap) <= radius


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: boundary F-measure of a predicted boolean mask against the ground truth ``(H, W)``."""
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} and {pred.shape}")
    radius = boundary_tolerance(gt.shape, bound_th)
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = int(np.count_nonzero(pred_b & _within(gt_b, radius))) / n_pred
        recall = int(np.count_nonzero(gt_b & _within(pred_b, radius))) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass
class DavisScores:
    """Per-object mean J and F, accumulated sequence by sequence.

    Attributes:
        objects: ``"<sequence>_<id>"`` per object, in order.
        j: mean J over the scored frames, per object.
        f: mean F over the scored frames, per object.
    """

    objects: list[str] = field(default_factory=list)
    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)

    def add_sequence(self, name: str, gt: np.ndarray, pred: np.ndarray) -> None:
        """Score one sequence.

        Args:
            name: the sequence's name.
            gt: ``(T, H, W)`` integer annotations (object ids, 0 background, 255 void); the
                objects are ``1 .. max(gt[0])``.
            pred: ``(T, H, W)`` integer predictions (object ids).

        Frames ``1 .. T-2`` are scored (a sequence of fewer than 3 frames scores none, and its
        objects are skipped).
        """
        if gt.shape != pred.shape or gt.ndim != 3:
            raise ValueError(f"annotations {gt.shape} and predictions {pred.shape} differ")
        gt = np.where(gt == VOID, 0, gt)
        n_objects = int(gt[0].max())
        frames = range(1, gt.shape[0] - 1)
        if not frames:
            return
        for obj in range(1, n_objects + 1):
            js = [region_similarity(gt[t] == obj, pred[t] == obj) for t in frames]
            fs = [boundary_f_measure(gt[t] == obj, pred[t] == obj) for t in frames]
            self.objects.append(f"{name}_{obj}")
            self.j.append(float(np.nanmean(js)))
            self.f.append(float(np.nanmean(fs)))

    def summary(self) -> dict[str, float]:
        """``{"j": J-Mean, "f": F-Mean, "jf": J&F-Mean}`` over all objects (NaN without any)."""
        if not self.objects:
            return {"j": math.nan, "f": math.nan, "jf": math.nan}
        j, f = float(np.mean(self.j)), float(np.mean(self.f))
        return {"j": j, "f": f, "jf": (j + f) / 2}
