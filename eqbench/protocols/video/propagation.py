"""Semi-supervised video object segmentation by label propagation over frozen patch features.

The protocol of DINO (Caron et al. 2021, facebookresearch/dino ``eval_video_segmentation.py`` at
commit ``7c446df``; itself after UVC and Jabri et al. 2020's CRW), which CropMAE (Eymaël et al.
2024) and the seed paper's Table 7 use:

* The first frame's annotation is downsampled to the feature grid (nearest neighbour, ``read_seg``
  line 239) and one-hot encoded (``to_one_hot``, lines 176-188).
* Frame ``t`` takes its labels from a context of the first frame, always kept, and the last
  ``n_last_frames`` frames' *soft* labels (a queue, lines 45-71).
* Affinity: cosine similarity of L2-normalised patch features of the target frame to every
  context patch, ``exp(s / temperature)`` (lines 125-129), restricted to a square window of
  ``size_mask_neighborhood`` patches each side of the target position (lines 85-99, 131-135);
  of all context patches, each target patch keeps its ``topk`` largest affinities (ties at the
  k-th value kept) and normalises them to sum to 1 (lines 137-142); labels are the weighted sum
  of the kept patches' labels (lines 144-150). This is a softmax at ``temperature`` over the
  top-k similarities; computed here from ``s - max s`` so that it cannot overflow.
* Prediction: the soft labels are upsampled bilinearly to the encoded frame size (line 74),
  each label channel min-max normalised (``norm_mask``, lines 102-110), the argmax taken
  (line 76) and resized to the annotation's size with nearest neighbour (line 80).

The defaults are DINO's (its script fixes the temperature at 0.1); CropMAE's
(``downstreams/propagation/start.py``) uses 0.7 with 20 context frames, top-7 and a radius of 20
(a disc, first frame unrestricted).
Both are a config away (:class:`PropagationConfig`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Target patches per affinity block: bounds memory at ``block × context × h·w`` floats.
TARGET_BLOCK = 1024


@dataclass(frozen=True)
class PropagationConfig:
    """Options of :func:`propagate`.

    Attributes:
        n_last_frames: previous frames kept besides the first (DINO ``--n_last_frames``, 7).
        size_mask_neighborhood: half-side, in patches, of the square window a target patch may
            take labels from; 0 for no restriction (DINO ``--size_mask_neighborhood``, 12).
        topk: neighbours each target patch takes labels from (DINO ``--topk``, 5).
        temperature: softmax temperature over the top-k cosine similarities (DINO's
            ``aff / 0.1``, lines 125-129; CropMAE uses 0.7).
    """

    n_last_frames: int = 7
    size_mask_neighborhood: int = 12
    topk: int = 5
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.n_last_frames < 0 or self.size_mask_neighborhood < 0:
            raise ValueError("n_last_frames and size_mask_neighborhood must be >= 0")
        if self.topk < 1:
            raise ValueError("topk must be at least 1")
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0")


def one_hot_labels(mask: Tensor, grid: tuple[int, int], n_labels: int) -> Tensor:
    """An annotation ``(H, W)`` of ids ``0 .. n_labels-1`` as one-hot labels ``(C, h, w)`` on the
    feature grid, downsampled with nearest neighbour (pixel ``floor((i + 0.5) · H / h)``, as PIL's
    ``NEAREST`` resize that DINO's ``read_seg`` uses)."""
    small = F.interpolate(mask[None, None].float(), size=grid, mode="nearest-exact")[0, 0]
    return F.one_hot(small.long().clamp(0, n_labels - 1), n_labels).permute(2, 0, 1).float()


def neighbourhood(h: int, w: int, radius: int, device: torch.device) -> Tensor:
    """``(h·w, h·w)`` bool: target patch ``i`` may take labels from source patch ``j`` (both
    row-major) when their rows and columns each differ by at most ``radius`` (all when 0)."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    if radius <= 0:
        return torch.ones(h * w, h * w, dtype=torch.bool, device=device)
    near_r = (rows[:, None] - rows[None, :]).abs() <= radius
    near_c = (cols[:, None] - cols[None, :]).abs() <= radius
    return near_r & near_c


def propagate_step(
    target: Tensor, sources: Tensor, labels: Tensor, allowed: Tensor, cfg: PropagationConfig
) -> Tensor:
    """Labels of one target frame from its context.

    Args:
        target: ``(D, h, w)`` patch features of the target frame (any scale).
        sources: ``(n, D, h, w)`` patch features of the context frames.
        labels: ``(n, C, h, w)`` soft labels of the context frames.
        allowed: ``(h·w, h·w)`` bool window (:func:`neighbourhood`).
        cfg: propagation options.

    Returns:
        ``(C, h, w)`` soft labels, each patch's summing to 1.
    """
    n, dim, h, w = sources.shape
    query = F.normalize(target.reshape(dim, h * w).T, dim=1)  # (hw, D)
    keys = F.normalize(sources.reshape(n, dim, h * w), dim=1)  # (n, D, hw)
    values = labels.reshape(n, labels.shape[1], h * w)  # (n, C, hw)
    values = values.permute(0, 2, 1).reshape(n * h * w, -1)  # (n·hw, C)
    out = torch.empty(h * w, values.shape[1], dtype=values.dtype, device=values.device)
    k = min(cfg.topk, n * h * w)
    for lo in range(0, h * w, TARGET_BLOCK):
        q = query[lo : lo + TARGET_BLOCK]  # (b, D)
        sim = torch.einsum("bd,ndj->bnj", q, keys)  # (b, n, hw)
        sim = sim.masked_fill(~allowed[lo : lo + TARGET_BLOCK, None, :], float("-inf"))
        sim = sim.reshape(q.shape[0], n * h * w)  # (b, n·hw)
        kth = sim.topk(k, dim=1).values[:, -1:]  # (b, 1)
        top = sim.max(dim=1, keepdim=True).values
        weights = torch.where(sim >= kth, ((sim - top) / cfg.temperature).exp(), 0.0)
        weights = weights / weights.sum(dim=1, keepdim=True)
        out[lo : lo + q.shape[0]] = weights @ values
    return out.T.reshape(-1, h, w)


def propagate(features: Tensor, first: Tensor, cfg: PropagationConfig) -> Tensor:
    """Soft labels of every frame of a clip from the first frame's.

    Args:
        features: ``(T, D, h, w)`` patch features of the clip's frames.
        first: ``(C, h, w)`` labels of frame 0 (one-hot, :func:`one_hot_labels`).
        cfg: propagation options.

    Returns:
        ``(T, C, h, w)`` soft labels; frame 0's are ``first``.
    """
    t_len, _, h, w = features.shape
    allowed = neighbourhood(h, w, cfg.size_mask_neighborhood, features.device)
    queue: deque[tuple[Tensor, Tensor]] = deque(maxlen=cfg.n_last_frames or None)
    out = [first]
    for t in range(1, t_len):
        context = [(features[0], first), *queue]
        sources = torch.stack([feat for feat, _ in context])
        labels = torch.stack([lab for _, lab in context])
        soft = propagate_step(features[t], sources, labels, allowed, cfg)
        if cfg.n_last_frames > 0:
            queue.append((features[t], soft))
        out.append(soft)
    return torch.stack(out)


def labels_to_mask(soft: Tensor, encoded: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Hard ids ``(H, W)`` int64 from soft labels ``(C, h, w)``: bilinear upsampling to the
    encoded frame size, per-channel min-max normalisation, argmax, nearest-neighbour resize to
    the annotation's size ``(H, W)``."""
    up = F.interpolate(soft[None], size=encoded, mode="bilinear", align_corners=False)[0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = up.amax(dim=(1, 2), keepdim=True)
    spread = high - low
    scaled = torch.where(high > 0, (up - low) / torch.where(spread > 0, spread, 1.0), up)
    ids = scaled.argmax(dim=0)
    if tuple(ids.shape) != tuple(size):
        ids = F.interpolate(ids[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return ids.long()
