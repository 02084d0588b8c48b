"""GTSA's losses between student and teacher feature maps.

Kim, "Self-Supervised Learning from Non-Object Centric Images with a Geometric Transformation
Sensitive Architecture", arXiv 2304.08014; official code ``bok3948/GTSA``
(``model_pretrain/gtsa.py``, ``GTSA.roi_align`` and ``GTSA.neirest_neighbores``):

* :func:`region_loss` (the paper's crop loss): RoIAlign both maps over the region their two crops
  share, rotate the pooled teacher map by the crops' relative quarter turns into the student
  crop's orientation, negative cosine similarity per cell, mean;
* :func:`patch_correspondence_loss`: every token of one map is matched to its nearest neighbour
  (cosine) in the other map, the ``num_matches`` best pairs are kept, negative cosine, mean;
  symmetric (student → teacher and teacher → student), averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align


def negative_cosine(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """``−cos(a, b)`` along ``dim`` (no reduction over the other dimensions)."""
    return -(F.normalize(a, dim=dim) * F.normalize(b, dim=dim)).sum(dim=dim)


def rotate_maps(maps: Tensor, k: Tensor) -> Tensor:
    """Rotate each ``(C, h, w)`` map of ``maps`` ``(n, C, h, w)`` by its own ``k[i]·90°``
    counter-clockwise (:func:`torch.rot90` over ``(h, w)``, eqbench's ``rotation4``; square maps
    unless every ``k`` is even)."""
    turns = k.to(maps.device).long().remainder(4).view(-1, 1, 1, 1)
    out = maps
    for quarter in (1, 2, 3):
        out = torch.where(turns == quarter, torch.rot90(maps, quarter, dims=(-2, -1)), out)
    return out


def pool_boxes(maps: Tensor, boxes: Tensor, output_size: int, spatial_scale: float) -> Tensor:
    """RoIAlign one box per map (``aligned=True``, adaptive sampling as torchvision's default).

    Args:
        maps: ``(B, C, h, w)``.
        boxes: ``(B, 4)`` ``(x0, y0, x1, y1)`` in pixels of the crop ``maps`` was computed from.
        output_size: side of the pooled grid.
        spatial_scale: map cells per pixel (``1 / patch_size`` for a ViT).

    Returns:
        ``(B, C, output_size, output_size)``.
    """
    index = torch.arange(maps.shape[0], device=maps.device, dtype=maps.dtype).unsqueeze(1)
    rois = torch.cat([index, boxes.to(device=maps.device, dtype=maps.dtype)], dim=1)  # (B, 5)
    return roi_align(maps, rois, output_size, spatial_scale=spatial_scale, aligned=True)


def region_loss(
    student: Tensor,
    teacher: Tensor,
    student_boxes: Tensor,
    teacher_boxes: Tensor,
    relative_turns: Tensor,
    output_size: int,
    spatial_scale: float,
) -> Tensor:
    """GTSA's crop loss for one (teacher crop, student crop) pair.

    Args:
        student: ``(B, C, h, w)`` student map of one crop.
        teacher: ``(B, C, h', w')`` teacher map of the other crop (no gradient needed).
        student_boxes: ``(B, 4)`` shared region in the student crop's rotated pixels.
        teacher_boxes: ``(B, 4)`` the same region in the teacher crop's rotated pixels.
        relative_turns: ``(B,)`` quarter turns of the student crop minus those of the teacher's.
        output_size: side of the pooled grids (paper: 10 for global student crops, 4 for local).
        spatial_scale: map cells per pixel, the same for both maps.

    Returns:
        Scalar: mean over images and cells of ``−cos(student cell, rotated teacher cell)``.
    """
    pooled_student = pool_boxes(student, student_boxes, output_size, spatial_scale)
    pooled_teacher = pool_boxes(teacher, teacher_boxes, output_size, spatial_scale)
    pooled_teacher = rotate_maps(pooled_teacher, relative_turns)
    return negative_cosine(pooled_student, pooled_teacher, dim=1).mean()


def nearest_neighbour_pairs(
    queries: Tensor, candidates: Tensor, num_matches: int
) -> tuple[Tensor, Tensor]:
    """The ``num_matches`` queries closest to their nearest candidate, and those candidates.

    Args:
        queries: ``(B, N, C)`` tokens.
        candidates: ``(B, M, C)`` tokens.
        num_matches: pairs kept per image (at most ``N``).

    Returns:
        ``(kept queries, their nearest candidates)``, ``(B, k, C)`` each, ``k = min(num_matches,
        N)``, in decreasing order of cosine similarity.
    """
    similarity = torch.bmm(F.normalize(queries, dim=-1), F.normalize(candidates, dim=-1).mT)
    best, nearest = similarity.max(dim=-1)  # (B, N) each
    k = min(num_matches, queries.shape[1])
    kept = best.topk(k, dim=1).indices  # (B, k)
    matched = nearest.gather(1, kept)  # (B, k)

    def take(tokens: Tensor, index: Tensor) -> Tensor:
        return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

    return take(queries, kept), take(candidates, matched)


def patch_correspondence_loss(student: Tensor, teacher: Tensor, num_matches: int) -> Tensor:
    """GTSA's patch-correspondence loss between two token sets (whole maps, any overlap).

    Args:
        student: ``(B, N, C)`` student tokens of one crop.
        teacher: ``(B, M, C)`` teacher tokens of another crop.
        num_matches: pairs kept per direction (paper: 98 for global student crops, 18 for local).

    Returns:
        Scalar ``½·(mean −cos over student → teacher pairs + mean −cos over teacher → student
        pairs)``.
    """
    s_kept, t_matched = nearest_neighbour_pairs(student, teacher, num_matches)
    t_kept, s_matched = nearest_neighbour_pairs(teacher, student, num_matches)
    forward = negative_cosine(s_kept, t_matched).mean()
    backward = negative_cosine(t_kept, s_matched).mean()
    return 0.5 * (forward + backward)


def correspondence_weight(step: int, weight: float, warmup_steps: int) -> float:
    """Weight of the patch-correspondence loss at ``step``: 0 for the first ``warmup_steps``
    steps, then ``weight`` (paper: 0.5 after 10 epochs)."""
    return weight if step >= warmup_steps else 0.0
