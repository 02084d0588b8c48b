"""Geometry of overlapping crops: boxes, their overlaps, and four-fold rotations of them.

GTSA (Kim, arXiv 2304.08014; code ``bok3948/GTSA``, ``util/gtsa_transforms.py``) compares the
student's and the teacher's feature maps over the part of the image that two crops share. These
pure functions compute that part in each crop's own pixel coordinates, and follow it when the crop
is rotated by ``k·90°``.

Conventions:

* *image boxes* are ``(n, 4)`` ``(x0, y0, x1, y1)`` as fractions of the (square) source image's
  side, ``x`` to the right and ``y`` down (``ViewParams.crop`` holds ``(x0, y0, w, h)``);
* *crop boxes* are ``(n, 4)`` ``(x0, y0, x1, y1)`` in pixels of a crop resized to ``size × size``
  (continuous coordinates: pixel ``j`` covers ``[j, j + 1)``), the format of
  :func:`torchvision.ops.roi_align`;
* rotation by ``k`` quarter turns is counter-clockwise as seen on screen, the convention of
  :func:`torch.rot90` over ``(H, W)`` and of eqbench's ``rotation4``: content at ``(x, y)`` moves
  to ``(y, S − x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(x0, y0, w, h)`` → ``(x0, y0, x0 + w, y0 + h)``, ``(n, 4)`` either way."""
    x0, y0, w, h = boxes.unbind(dim=-1)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(centre_x, centre_y, w, h)`` (:meth:`TwoViewAugment.crop_boxes`) → ``(x0, y0, x1, y1)``."""
    cx, cy, w, h = boxes.unbind(dim=-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def intersection(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise intersection of boxes ``a`` and ``b`` ``(n, 4)`` (empty ones have ``x1 <= x0``)."""
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    return torch.cat([top_left, bottom_right], dim=-1)


def intersection_area(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise area ``(n,)`` of the intersection of ``a`` and ``b`` (0 when they are disjoint)."""
    box = intersection(a, b)
    return (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)


def overlap_in_crop(crop: Tensor, other: Tensor, size: int) -> Tensor:
    """The part of ``crop`` that ``other`` also covers, in ``crop``'s pixel coordinates.

    Args:
        crop: ``(n, 4)`` image box of the crop whose coordinates we want.
        other: ``(n, 4)`` image box of the other crop.
        size: side in pixels of the (unrotated, unflipped) crop.

    Returns:
        ``(n, 4)`` crop box ``(x0, y0, x1, y1)`` in pixels of ``crop`` (degenerate where the two
        do not overlap).
    """
    box = intersection(crop, other)
    origin = crop[..., :2].repeat(1, 2)  # (n, 4): x0, y0, x0, y0
    extent = (crop[..., 2:] - crop[..., :2]).repeat(1, 2)  # (n, 4): w, h, w, h
    return (box - origin) / extent * size


def rotate_boxes(boxes: Tensor, k: Tensor, size: int) -> Tensor:
    """Where crop boxes land after their ``size × size`` crop is rotated by ``k·90°``.

    Args:
        boxes: ``(n, 4)`` crop boxes ``(x0, y0, x1, y1)`` in pixels.
        k: ``(n,)`` integer quarter turns (counter-clockwise; any integer, taken mod 4).
        size: side of the crop in pixels.

    Returns:
        ``(n, 4)`` boxes in the rotated crop's pixel coordinates, still with ``x0 <= x1`` and
        ``y0 <= y1``: one quarter turn maps ``(x0, y0, x1, y1)`` to ``(y0, S − x1, y1, S − x0)``.
    """
    turns = k.to(boxes.device).long().remainder(4).view(-1, 1)
    turned, result = boxes, boxes
    for quarter in (1, 2, 3):
        x0, y0, x1, y1 = turned.unbind(dim=-1)
        turned = torch.stack([y0, size - x1, y1, size - x0], dim=-1)  # one more quarter turn
        result = torch.where(turns == quarter, turned, result)
    return result
