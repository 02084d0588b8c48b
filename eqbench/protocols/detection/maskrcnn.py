"""Mask R-CNN on a ViT simple feature pyramid (torchvision), and COCO box / mask AP.

The pyramid is ViTDet's (:mod:`eqbench.backbones.pyramid`, shared with the mmdet task): from the
stride-16 patch-token map, stride 4 = two 2× deconvolutions, stride 8 = one 2× deconvolution,
stride 16 = identity, stride 32 = 2× max-pooling; each level then gets a 1×1 and a 3×3
convolution with LayerNorm to ``out_channels``. Backbones whose token map is not at stride 16
(raw pixels, CNNs) are resampled to stride 16 first. The detector is torchvision's ``MaskRCNN``
with one anchor size per level and the input normalisation left to the eqbench encoder.

AP is pycocotools' ``COCOeval`` (box and segm) on COCO-format ground truth: AP, AP50, AP75.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from eqbench.backbones.base import Encoder
from eqbench.backbones.pyramid import SimpleFeaturePyramid
from eqbench.data.dense import Instance

#: Names of the pyramid levels (strides 4, 8, 16, 32), as torchvision's RoI pooling reads them.
LEVELS = ("0", "1", "2", "3")
#: AP statistics reported per IoU type, as indices into ``COCOeval.stats``.
AP_STATS = {"ap": 0, "ap50": 1, "ap75": 2}


class PyramidBackbone(nn.Module):
    """An eqbench encoder plus ViTDet's :class:`~eqbench.backbones.pyramid.SimpleFeaturePyramid`.

    Args:
        encoder: the backbone; called on images in [0, 1] (it normalises them itself).
        out_channels: width of every pyramid level.
        frozen: keep the encoder's weights fixed (no gradients, eval mode).

    Attributes:
        out_channels: what torchvision's detection heads read.
    """

    def __init__(self, encoder: Encoder, out_channels: int = 256, frozen: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.frozen = frozen
        self.out_channels = out_channels
        if frozen:
            encoder.requires_grad_(False)
        self.pyramid = SimpleFeaturePyramid(encoder.embed_dim, out_channels, in_stride=16)

    def train(self, mode: bool = True) -> PyramidBackbone:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def token_map(self, images: Tensor) -> Tensor:
        """The encoder's patch tokens as a stride-16 map ``(B, D, H/16, W/16)``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.encoder(images)
        h, w = out.grid
        fmap = out.patch_map()  # (B, D, h, w)
        target = (max(1, images.shape[-2] // 16), max(1, images.shape[-1] // 16))
        if (h, w) != target:
            fmap = F.interpolate(fmap, size=target, mode="bilinear", align_corners=False)
        return fmap

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """Pyramid ``{"0": stride 4, "1": 8, "2": 16, "3": 32}`` of ``(B, C, ·, ·)`` maps."""
        maps = self.pyramid(self.token_map(images))
        return OrderedDict(zip(LEVELS, maps, strict=True))


def build_maskrcnn(
    encoder: Encoder,
    num_classes: int,
    image_size: int,
    *,
    frozen: bool,
    out_channels: int = 256,
    anchor_sizes: Sequence[float] | None = None,
    proposals: int = 1000,
    rois_per_image: int = 512,
    detections_per_image: int = 100,
) -> MaskRCNN:
    """torchvision ``MaskRCNN`` on a :class:`PyramidBackbone` of ``encoder``.

    Args:
        encoder: the backbone (modified in place when finetuned: pass a copy).
        num_classes: classes including the background.
        image_size: square input side; torchvision's resizing is turned off (min = max = it).
        frozen: frozen backbone (only the pyramid and heads train) or finetuned.
        out_channels: pyramid width.
        anchor_sizes: one anchor size per level (strides 4..32); default ``image_size`` ×
            (1/8, 1/4, 1/2, 1).
        proposals: RPN proposals kept after NMS (training and test; torchvision: 2000 / 1000
            before NMS, here twice this).
        rois_per_image: proposals sampled per image for the box head's loss (torchvision: 512).
        detections_per_image: detections kept per image (COCO: 100).
    """
    sizes = anchor_sizes or [image_size / 8, image_size / 4, image_size / 2, image_size]
    if len(sizes) != len(LEVELS):
        raise ValueError(f"anchor_sizes needs {len(LEVELS)} values (one per level)")
    anchors = AnchorGenerator(
        sizes=tuple((float(s),) for s in sizes), aspect_ratios=((0.5, 1.0, 2.0),) * len(LEVELS)
    )
    return MaskRCNN(
        PyramidBackbone(encoder, out_channels, frozen),
        num_classes=num_classes,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0, 0.0, 0.0],  # the encoder normalises its inputs itself
        image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(list(LEVELS), output_size=7, sampling_ratio=2),
        mask_roi_pool=MultiScaleRoIAlign(list(LEVELS), output_size=14, sampling_ratio=2),
        rpn_pre_nms_top_n_train=2 * proposals,
        rpn_pre_nms_top_n_test=2 * proposals,
        rpn_post_nms_top_n_train=proposals,
        rpn_post_nms_top_n_test=proposals,
        box_batch_size_per_image=rois_per_image,
        box_detections_per_img=detections_per_image,
    )


def instance_targets(instances: Sequence[Instance], size: tuple[int, int]) -> dict[str, Tensor]:
    """torchvision targets: ``boxes (N, 4)`` xyxy, ``labels (N,)``, ``masks (N, H, W)`` uint8."""
    boxes = [(x, y, x + w, y + h) for x, y, w, h in (inst.box for inst in instances)]
    masks = np.stack([inst.mask for inst in instances]) if instances else np.zeros((0, *size))
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([inst.category for inst in instances], dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A bool ``(H, W)`` mask as COCO compressed RLE with a ``str`` ``counts`` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_ground_truth(
    instances: Sequence[Sequence[Instance]], size: tuple[int, int], classes: Sequence[str]
) -> dict[str, Any]:
    """COCO instances JSON (as a dict) of images ``1..N`` of ``size`` = ``(H, W)``; category ids
    are the class indices ``1..K`` (0, the background, is not a category)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, objects in enumerate(instances, start=1):
        images.append({"id": i, "width": size[1], "height": size[0], "file_name": f"{i}.png"})
        for inst in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(inst.category),
                    "segmentation": encode_rle(inst.mask),
                    "area": float(inst.mask.sum()),
                    "bbox": [float(v) for v in inst.box],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": str(classes[c])} for c in range(1, len(classes))]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results(
    outputs: Sequence[dict[str, Tensor]], image_ids: Sequence[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """torchvision detector outputs (``boxes`` xyxy, ``labels``, ``scores``, ``masks``
    ``(N, 1, H, W)`` probabilities) as COCO result entries with ``bbox`` and ``segmentation``."""
    results = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().cpu().double()
        masks = (out["masks"].detach().cpu()[:, 0] > mask_threshold).numpy()
        for k in range(len(boxes)):
            x0, y0, x1, y1 = boxes[k].tolist()
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(out["labels"][k]),
                    "score": float(out["scores"][k]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": encode_rle(masks[k]),
                }
            )
    return results


def coco_ap(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    """``box_ap``, ``box_ap50``, ``box_ap75``, ``mask_ap``, ... (fractions) from ``COCOeval``.

    No detections at all score 0 (``COCOeval`` cannot load an empty result list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = {f"{iou}_{k}": 0.0 for iou in ("box", "mask") for k in AP_STATS}
    if not results or not ground_truth["annotations"]:
        return out
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(results)
        for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for name, index in AP_STATS.items():
                out[f"{prefix}_{name}"] = max(0.0, float(ev.stats[index]))
    return out
