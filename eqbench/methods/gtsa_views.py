"""GTSA's views: overlapping multi-crops, each rotated by its own ``k·90°``.

GTSA (Kim, arXiv 2304.08014; code ``bok3948/GTSA``, ``util/gtsa_transforms.py``) draws two global
and ``n_local`` local random resized crops with DINO-style multi-crop, re-sampling every crop after
the first until it overlaps the global crops drawn before it (each local crop: more than
``min_overlap`` of the image area with both global crops; the second global crop: twice that with
the first), then colour-jitters, grayscales and blurs them (no flip) and rotates each crop by a
random multiple of 90°. It keeps each crop's box and rotation, from which
:meth:`GTSACrops.overlap` gives the shared region in any crop's rotated pixel coordinates.

The crops come from eqbench's one augmentation pipeline
(:meth:`~eqbench.methods.augment.TwoViewAugment.crop_with_params`, given the re-sampled boxes),
and the rotation is eqbench's ``rotation4`` transformation. **eqbench default**: a crop still
short of the overlap after ``max_tries`` re-draws keeps its size and is centred on the global
crops' common region (the official code re-draws forever).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eqbench.methods.augment import (
    LOCAL_REFERENCE_SIZE,
    REFERENCE_SIZE,
    MultiCropAugment,
    to_unit_float,
)
from eqbench.methods.overlap import (
    cxcywh_to_xyxy,
    intersection,
    intersection_area,
    overlap_in_crop,
    rotate_boxes,
)
from eqbench.transforms import build_transform

#: Global crops of GTSA (the teacher sees them; the paper and the official code use two).
N_GLOBAL = 2


@dataclass
class GTSACrops:
    """The rotated crops of one step and where they come from.

    Attributes:
        views: ``2 + n_local`` crops ``(B, 3, s, s)`` in [0, 1], global ones first, each already
            rotated by its ``turns``.
        boxes: ``(V, B, 4)`` image box ``(x0, y0, x1, y1)`` of every crop (fractions of the
            image side), before rotation.
        turns: ``(V, B)`` long quarter turns (counter-clockwise) applied to every crop.
        sizes: side in pixels of every crop.
    """

    views: list[Tensor]
    boxes: Tensor
    turns: Tensor
    sizes: list[int]

    @property
    def globals(self) -> list[Tensor]:
        """The global crops (teacher and student)."""
        return self.views[:N_GLOBAL]

    @property
    def locals(self) -> list[Tensor]:
        """The local crops (student only)."""
        return self.views[N_GLOBAL:]

    def overlap(self, view: int, other: int) -> Tensor:
        """``(B, 4)`` box of the region ``view`` shares with ``other``, in pixels of ``view`` as
        rotated (the coordinates of its feature map times the patch size)."""
        size = self.sizes[view]
        box = overlap_in_crop(self.boxes[view], self.boxes[other], size)
        return rotate_boxes(box, self.turns[view], size)


class GTSAViews:
    """Makes :class:`GTSACrops` of a batch of images.

    Args:
        augment: the multi-crop pipeline (global and local crop options); its flip must be off.
        min_overlap: least area, as a fraction of the image, that a local crop shares with each
            global crop (twice that between the global crops; official code: 0.01).
        max_tries: re-draws of the crops that still miss it before the fallback.
    """

    def __init__(
        self, augment: MultiCropAugment, min_overlap: float = 0.01, max_tries: int = 50
    ) -> None:
        self.augment = augment
        self.min_overlap = min_overlap
        self.max_tries = max_tries
        self.rotations = {
            size: build_transform("rotation4", size)
            for size in (augment.image_size, augment.local_size)
        }

    def overlapping_boxes(
        self,
        n: int,
        generator: torch.Generator,
        crop_scale: tuple[float, float],
        against: list[Tensor],
        min_area: float,
    ) -> tuple[Tensor, Tensor]:
        """Crop boxes (:meth:`TwoViewAugment.crop_boxes` format) that share more than
        ``min_area`` with every image box of ``against``; the rows that miss are re-drawn.

        Returns:
            ``(box, flip)``: ``(n, 4)`` float64 ``(centre_x, centre_y, w, h)`` and ``(n,)`` bool.
        """
        box, flip = self.augment.crop_boxes(n, generator, crop_scale)
        if not against:
            return box, flip

        def missing(candidate: Tensor) -> Tensor:
            xyxy = cxcywh_to_xyxy(candidate)
            ok = [intersection_area(xyxy, other.to(xyxy.dtype)) > min_area for other in against]
            return ~torch.stack(ok).all(dim=0)

        for _ in range(self.max_tries):
            bad = missing(box)
            if not bool(bad.any()):
                return box, flip
            new_box, new_flip = self.augment.crop_boxes(n, generator, crop_scale)
            box = torch.where(bad.unsqueeze(1), new_box, box)
            flip = torch.where(bad, new_flip, flip)
        bad = missing(box)
        if bool(bad.any()):  # centre the crop on the region every box of `against` shares
            common = against[0].to(box.dtype)
            for other in against[1:]:
                common = intersection(common, other.to(box.dtype))
            centre = (common[:, :2] + common[:, 2:]) / 2
            half = box[:, 2:] / 2
            moved = torch.minimum(torch.maximum(centre, half), 1 - half)
            box = torch.where(bad.unsqueeze(1), torch.cat([moved, box[:, 2:]], dim=1), box)
        return box, flip

    def __call__(self, images: Tensor, generator: torch.Generator) -> GTSACrops:
        """Crops of uint8 (or [0, 1] float) ``images`` ``(B, 3, H, W)``.

        Draws, crop after crop (global ones first): the box (and its re-draws), the photometric
        parameters (:meth:`~eqbench.methods.augment.TwoViewAugment.crop_with_params`), ``k``.
        """
        augment, local = self.augment, self.augment.local
        x = to_unit_float(images)
        n = x.shape[0]
        views: list[Tensor] = []
        boxes: list[Tensor] = []
        turns: list[Tensor] = []
        sizes: list[int] = []
        for index in range(N_GLOBAL + local.n_local):
            is_global = index < N_GLOBAL
            scale = augment.config.crop_scale if is_global else local.local_crop_scale
            against = boxes[:N_GLOBAL]
            min_area = self.min_overlap * (2 if is_global else 1)
            drawn = self.overlapping_boxes(n, generator, scale, against, min_area)
            size = augment.image_size if is_global else augment.local_size
            view, _ = augment.crop_with_params(
                x,
                generator,
                size=size,
                crop_scale=scale,
                blur=augment.blur if is_global else augment.local_blur,
                blur_p=augment.config.blur_p[index] if is_global else local.local_blur_p,
                solarize_p=(
                    augment.config.solarize_p[index] if is_global else local.local_solarize_p
                ),
                boxes=drawn,
                blur_reference=REFERENCE_SIZE if is_global else LOCAL_REFERENCE_SIZE,
            )
            rotation = self.rotations[size]
            k = rotation.sample(n, generator)  # (B, 1) float class indices
            views.append(rotation.apply(view, k.to(view.device)))
            boxes.append(cxcywh_to_xyxy(drawn[0]))  # = params.crop, in float64
            turns.append(k[:, 0].long())
            sizes.append(size)
        return GTSACrops(views, torch.stack(boxes), torch.stack(turns), sizes)
