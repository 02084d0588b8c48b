"""MPII keypoints: Gaussian heatmap targets and their decoding, and PCKh as MPII scores it.

Heatmaps follow mmpose's ``MSRAHeatmap`` codec (``mmpose/codecs/msra_heatmap.py``, lines 77-153,
"Simple Baselines", Xiao et al. 2018): each visible keypoint, scaled from input pixels to heatmap
cells, is rounded to a cell and gets an unnormalised Gaussian of ``sigma`` cells (peak 1) cut at
3σ (``codecs/utils/gaussian_heatmap.py``, ``generate_gaussian_heatmaps``, lines 120-202); a
keypoint whose window misses the map gets weight 0. Decoding takes each map's argmax
(``codecs/utils/post_processing.py``, ``get_heatmap_maximum``, lines 156-198) and moves it a
quarter cell towards the larger neighbour along x and y (``codecs/utils/refinement.py``,
``refine_keypoints``, lines 9-46, with its bounds), then scales back to input pixels.

PCKh is the official MPII evaluation as mmpose 0.x ports it from HRNet
(``TopDownMpiiDataset.evaluate``; ViTPose ``mmpose/datasets/datasets/top_down/
topdown_mpii_dataset.py`` lines 198-262): a visible joint is correct when its distance to the
ground truth, divided by the head size (the head box's diagonal × ``SC_BIAS`` 0.6), is at most
the threshold (0.5); per-joint rates over the test split; the headline PCKh pools every visible
joint but the pelvis and thorax (MPII's "total": per-joint rates weighted by joint counts, with
joints 6 and 7 masked); the groups average left and right (``0.5 * (PCKh[l] + PCKh[r])``).
"""

from __future__ import annotations

import math

import numpy as np

#: Joint groups of MPII's table: (left, right) indices, or the one joint for the head.
GROUPS = {
    "head": (9,),
    "shoulder": (13, 12),
    "elbow": (14, 11),
    "wrist": (15, 10),
    "hip": (3, 2),
    "knee": (4, 1),
    "ankle": (5, 0),
}
#: Joints left out of the headline PCKh (pelvis, thorax), as MPII's evaluation masks them.
UNSCORED = (6, 7)
PCKH_THRESHOLD = 0.5


def encode_heatmaps(
    keypoints: np.ndarray,
    visible: np.ndarray,
    heatmap_size: tuple[int, int],
    input_size: tuple[int, int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmaps of one instance (mmpose ``MSRAHeatmap.encode``, unbiased=False).

    Args:
        keypoints: ``(K, 2)`` x, y in input pixels.
        visible: ``(K,)`` truthy for annotated, visible joints.
        heatmap_size: ``(H, W)`` of the maps.
        input_size: ``(h, w)`` of the input image.
        sigma: Gaussian standard deviation in heatmap cells.

    Returns:
        ``(heatmaps (K, H, W) float32, weights (K,) float32)``: weight 1 for a visible joint
        whose 3σ window touches the map, else 0.
    """
    height, width = heatmap_size
    scale = np.array([input_size[1] / width, input_size[0] / height], dtype=np.float32)
    points = np.asarray(keypoints, dtype=np.float32) / scale  # (K, 2) in heatmap cells
    heatmaps = np.zeros((len(points), height, width), dtype=np.float32)
    weights = (np.asarray(visible) > 0.5).astype(np.float32)
    radius = sigma * 3
    size = 2 * radius + 1
    x = np.arange(0, size, 1, dtype=np.float32)
    y = x[:, None]
    x0 = y0 = size // 2
    gaussian = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    for k, point in enumerate(points):
        if weights[k] < 0.5:
            continue
        mu = (point + 0.5).astype(np.int64)
        left, top = (mu - radius).astype(np.int64)
        right, bottom = (mu + radius + 1).astype(np.int64)
        if left >= width or top >= height or right < 0 or bottom < 0:
            weights[k] = 0.0
            continue
        g_x1, g_x2 = max(0, -left), min(width, right) - left
        g_y1, g_y2 = max(0, -top), min(height, bottom) - top
        region = heatmaps[k, max(0, top) : min(height, bottom), max(0, left) : min(width, right)]
        np.maximum(region, gaussian[g_y1:g_y2, g_x1:g_x2], out=region)
    return heatmaps, weights


def decode_heatmaps(heatmaps: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Keypoints ``(B, K, 2)`` in input pixels from heatmaps ``(B, K, H, W)``: argmax, the
    quarter-cell shift towards the higher neighbour, scaled by ``input / heatmap`` size
    (mmpose ``MSRAHeatmap.decode``). A map whose maximum is not positive decodes to cell
    ``(-1, -1)``, as mmpose's ``get_heatmap_maximum`` does."""
    batch, joints, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch * joints, -1)
    y_locs, x_locs = np.unravel_index(np.argmax(flat, axis=1), (height, width))
    locs = np.stack((x_locs, y_locs), axis=-1).astype(np.float32)
    locs[np.max(flat, axis=1) <= 0.0] = -1
    maps = heatmaps.reshape(batch * joints, height, width)
    for row in range(len(locs)):
        x, y = locs[row].astype(int)
        dx = dy = 0.0
        if 1 < x < width - 1 and 0 < y < height:
            dx = float(maps[row, y, x + 1] - maps[row, y, x - 1])
        if 1 < y < height - 1 and 0 < x < width:
            dy = float(maps[row, y + 1, x] - maps[row, y - 1, x])
        locs[row] += np.sign([dx, dy]).astype(np.float32) * 0.25
    scale = np.array([input_size[1] / width, input_size[0] / height], dtype=np.float32)
    return locs.reshape(batch, joints, 2) * scale


class PCKhScores:
    """Accumulates predictions over a test split and scores them as MPII does."""

    def __init__(self) -> None:
        self._errors: list[np.ndarray] = []  # (K,) distance / head size per instance
        self._visible: list[np.ndarray] = []

    def add(self, pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: float) -> None:
        """One instance: ``pred`` and ``gt`` ``(K, 2)`` in image pixels, ``visible`` ``(K,)``,
        ``head_size`` in pixels (:func:`eqbench.data.pose.head_size`)."""
        if not head_size > 0:
            raise ValueError(f"head size must be positive, got {head_size}")
        self._errors.append(np.linalg.norm(pred - gt, axis=1) / head_size)
        self._visible.append(np.asarray(visible, dtype=bool))

    def per_joint(self, threshold: float = PCKH_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
        """``(rate, count)``, each ``(K,)``: the fraction of visible joints within
        ``threshold`` head sizes (NaN for a joint never visible) and the visible count."""
        errors, visible = np.stack(self._errors), np.stack(self._visible)
        hits = ((errors <= threshold) & visible).sum(axis=0)
        count = visible.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return hits / count, count

    def total(self, threshold: float = PCKH_THRESHOLD) -> float:
        """The headline PCKh: every visible joint but the pelvis and thorax, pooled."""
        rate, count = self.per_joint(threshold)
        keep = np.ones(len(rate), dtype=bool)
        keep[list(UNSCORED)] = False
        if count[keep].sum() == 0:
            return math.nan
        return float(np.nansum(rate[keep] * count[keep]) / count[keep].sum())

    def summary(self) -> dict[str, float]:
        """``pckh`` (@0.5), ``pckh_01`` (@0.1) and ``pckh_<group>`` for MPII's joint groups
        (a group never visible is NaN), as fractions."""
        out = {"pckh": self.total(), "pckh_01": self.total(0.1)}
        rate, _ = self.per_joint()
        for group, joints in GROUPS.items():
            values = rate[list(joints)]
            out[f"pckh_{group}"] = float(values.mean()) if np.isfinite(values).all() else math.nan
        return out


#: Metric names of :meth:`PCKhScores.summary`, in order.
SCORES = ("pckh", "pckh_01", *(f"pckh_{group}" for group in GROUPS))
