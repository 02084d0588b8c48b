"""Object detection and instance segmentation: Mask R-CNN on a ViT simple feature pyramid.

torchvision's ``MaskRCNN`` (the default engine, no compiled extras) over the eqbench backbone of
any checkpoint spec (see :mod:`eqbench.protocols.detection.maskrcnn`), backbone frozen or finetuned.
Images (and their instance masks) are resized so the shorter side is ``image_size`` and
centre-cropped; objects cut away by the crop are dropped and boxes are the tight boxes of the
visible masks.
Training: AdamW with linear warm-up then cosine decay, on the train split; scoring: COCO box and
mask AP (pycocotools ``COCOeval``) on the test (val) split, against COCO-format ground truth of
the same images (crowd regions of ``coco:PATH`` are left out). Primary metric: box AP.

Under ``torchrun`` every process trains the detector (DistributedDataParallel on its share of
each global batch of ``batch_size`` images, the total kept) and detects in its share of the test
images; rank 0 scores them all.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from eqbench.data.base import ImageDataset
from eqbench.data.coco import CocoInstances
from eqbench.data.dense import Instance, mask_box, square_pair
from eqbench.data.shapes import ShapeScenes
from eqbench.errors import DatasetError
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol
from eqbench.protocols.detection.maskrcnn import (
    build_maskrcnn,
    coco_ap,
    coco_ground_truth,
    coco_results,
    instance_targets,
)
from eqbench.train.distributed import DistContext, global_batch_share

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskRcnnConfig:
    """Options of the Mask R-CNN task.

    Attributes:
        image_size: side of the square training and test images.
        n_train / n_test: images per split (``None``: the whole split).
        frozen: ``true``: frozen backbone (pyramid and heads train); ``false``: finetuned.
        iterations / batch_size: optimiser steps and images per step.
        lr / weight_decay / warmup_iterations: AdamW, linear warm-up then cosine decay.
        fpn_channels: width of the pyramid levels.
        anchor_sizes: one anchor size per level (strides 4, 8, 16, 32); default
            ``image_size`` × (1/8, 1/4, 1/2, 1).
        proposals / rois_per_image / detections_per_image: RPN proposals after NMS, proposals
            sampled per image for the box loss, detections kept per image (see
            :func:`~eqbench.protocols.detection.maskrcnn.build_maskrcnn`; the COCO values are 1000,
            512, 100).
        hflip: random horizontal flips during training.
        probe_seeds: detectors trained with seeds ``seed, seed + 1, ...``.
    """

    image_size: int = 128
    n_train: int | None = 1000
    n_test: int | None = 200
    frozen: bool = False
    iterations: int = 2000
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_iterations: int = 100
    fpn_channels: int = 256
    anchor_sizes: list[float] | None = None
    proposals: int = 1000
    rois_per_image: int = 512
    detections_per_image: int = 100
    hflip: bool = True
    probe_seeds: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError("image_size must be a multiple of 32 (stride-32 pyramid level)")
        if self.iterations < 1 or self.batch_size < 1 or self.probe_seeds < 1:
            raise ValueError("iterations, batch_size and probe_seeds must be at least 1")
        if self.warmup_iterations < 0:
            raise ValueError("warmup_iterations must be >= 0")
        if self.anchor_sizes is not None and len(self.anchor_sizes) != 4:
            raise ValueError("anchor_sizes needs 4 values, one per level (strides 4, 8, 16, 32)")


def _square_instances(
    image: np.ndarray, instances: list[Instance], size: int
) -> tuple[Tensor, list[Instance]]:
    """Image and instances resized and centre-cropped to ``size`` (as ``load_pair`` does)."""
    h, w = image.shape[:2]
    out_image, _ = square_pair(image, np.zeros((h, w), dtype=np.int64), size)
    out = []
    for inst in instances:
        _, mask = square_pair(image, inst.mask.astype(np.int64), size)
        m = mask.numpy().astype(bool)
        if m.any():
            out.append(Instance(inst.category, m, mask_box(m)))
    return out_image, out


def detection_split(ds: ImageDataset, size: int) -> tuple[Tensor, list[list[Instance]]]:
    """Images ``(N, 3, size, size)`` uint8 and the visible instances of each, at ``size``."""
    images = torch.empty((len(ds), 3, size, size), dtype=torch.uint8)
    instances: list[list[Instance]] = []
    for i in range(len(ds)):
        if isinstance(ds, ShapeScenes):
            images[i], _ = ds.render(i, size)
            instances.append(ds.instances(i, size))
        elif isinstance(ds, CocoInstances):
            images[i], objects = _square_instances(ds.image(i), ds.instances(i), size)
            instances.append(objects)
        else:
            raise DatasetError(
                f"Dataset '{ds.name}' has no instance annotations, so it cannot score detection. "
                "Use shapes (built-in) or coco:PATH."
            )
    return images, instances


def _lr_factor(step: int, cfg: MaskRcnnConfig) -> float:
    if step < cfg.warmup_iterations:
        return (step + 1) / cfg.warmup_iterations
    done = (step - cfg.warmup_iterations) / max(1, cfg.iterations - cfg.warmup_iterations)
    return 0.5 * (1 + math.cos(math.pi * done))


def train_detector(
    model: torch.nn.Module,
    images: Tensor,
    targets: list[dict[str, Tensor]],
    cfg: MaskRcnnConfig,
    seed: int,
    device: torch.device,
    show_progress: bool = True,
    dist_ctx: DistContext | None = None,
) -> list[float]:
    """Train ``model`` in place; returns the summed loss of every step.

    Every step draws a global batch of ``cfg.batch_size`` images (and flips) from a generator
    seeded with ``seed``. Launched by ``torchrun`` (``dist_ctx``), every process draws the same
    one and trains on its contiguous share under DistributedDataParallel, which averages the
    processes' gradients (each process's losses are means over its own sampled anchors and
    proposals, as in detectron2 and mmdet); the returned losses are the processes' mean.
    """
    world = dist_ctx if dist_ctx is not None and dist_ctx.distributed else None
    total = min(cfg.batch_size, len(images))
    first, last = global_batch_share(total, world, "detector")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    trained = model
    if world is not None:
        ids = [device] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=ids)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    with Progress(
        TextColumn("[bold]train[/] Mask R-CNN"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        disable=not show_progress,
        transient=True,
    ) as progress:
        bar = progress.add_task("train", total=cfg.iterations, loss=float("nan"))
        for step in range(cfg.iterations):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg)
            idx = torch.randint(len(images), (total,), generator=gen)
            flips = torch.rand(len(idx), generator=gen) < 0.5 if cfg.hflip else [False] * len(idx)
            batch_images, batch_targets = [], []
            share = zip(idx.tolist()[first:last], list(flips)[first:last], strict=True)
            for i, flip in share:
                image = images[i].to(device).float().div(255.0)  # (3, S, S)
                target = {k: v.to(device) for k, v in targets[i].items()}
                if flip:
                    image, target = _hflip(image, target)
                batch_images.append(image)
                batch_targets.append(target)
            loss_dict = trained(batch_images, batch_targets)
            loss = sum(loss_dict.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.detach().double().reshape(1)
            if world is not None:
                value = world.all_reduce_sum(value) / world.world_size
            losses.append(float(value))
            progress.update(bar, advance=1, loss=losses[-1])
            if step % 100 == 0 or step == cfg.iterations - 1:
                log.debug("maskrcnn step %d loss %.4f", step, losses[-1])
    return losses


def _hflip(image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


@torch.inference_mode()
def predict(
    model: torch.nn.Module, images: Tensor, device: torch.device, batch_size: int = 8
) -> list[dict[str, Tensor]]:
    """Detections of every image (CPU tensors)."""
    model.eval()
    out: list[dict[str, Tensor]] = []
    for lo in range(0, len(images), batch_size):
        batch = [im.to(device).float().div(255.0) for im in images[lo : lo + batch_size]]
        out += [{k: v.cpu() for k, v in o.items()} for o in model(batch)]
    return out


@PROTOCOLS.register("maskrcnn")
class MaskRcnn(Protocol):
    """Mask R-CNN (torchvision) on a ViT simple feature pyramid; COCO box and mask AP."""

    Config = MaskRcnnConfig
    metrics = (
        "box_ap",
        "box_ap50",
        "box_ap75",
        "mask_ap",
        "mask_ap50",
        "mask_ap75",
        "train_s",
    )
    units: ClassVar[dict[str, str]] = dict(dict.fromkeys(metrics[:-1], "percent"), train_s="s")
    lower_is_better = frozenset({"train_s"})
    collective = True

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: MaskRcnnConfig = config
        train_ds, test_ds = ctx.open("train", n=cfg.n_train), ctx.open("test", n=cfg.n_test)
        x_tr, inst_tr = detection_split(train_ds, cfg.image_size)
        x_te, inst_te = detection_split(test_ds, cfg.image_size)
        size = (cfg.image_size, cfg.image_size)
        targets = [instance_targets(objects, size) for objects in inst_tr]
        ground_truth = coco_ground_truth(inst_te, size, train_ds.classes)
        device = ctx.store.device
        dist_ctx = ctx.dist if ctx.dist is not None and ctx.dist.distributed else None
        global_batch_share(min(cfg.batch_size, len(x_tr)), dist_ctx, "detector")
        rank, world = (dist_ctx.rank, dist_ctx.world_size) if dist_ctx is not None else (0, 1)
        mine = range(len(x_te) * rank // world, len(x_te) * (rank + 1) // world)
        out: MetricValues = {}
        for i in range(cfg.probe_seeds):
            torch.manual_seed(ctx.seed + i)
            model = build_maskrcnn(
                copy.deepcopy(ctx.model.encoder),  # finetuning must not touch the shared one
                num_classes=len(train_ds.classes),
                image_size=cfg.image_size,
                frozen=cfg.frozen,
                out_channels=cfg.fpn_channels,
                anchor_sizes=cfg.anchor_sizes,
                proposals=cfg.proposals,
                rois_per_image=cfg.rois_per_image,
                detections_per_image=cfg.detections_per_image,
            ).to(device)
            start = time.perf_counter()
            show = ctx.store.show_progress
            train_detector(model, x_tr, targets, cfg, ctx.seed + i, device, show, dist_ctx)
            out.setdefault("train_s", []).append(time.perf_counter() - start)
            # each process detects in its share of the test images; rank 0 scores them all
            detections = predict(model, x_te[mine.start : mine.stop], device)
            if dist_ctx is not None:
                shares = dist_ctx.gather_object(detections)
                detections = [d for share in shares or [] for d in share]
            scores: dict[str, float] = {}
            if dist_ctx is None or dist_ctx.is_main:
                scores = coco_ap(ground_truth, coco_results(detections, range(1, len(x_te) + 1)))
            if dist_ctx is not None:
                scores = dist_ctx.broadcast_object(scores)
            for name, value in scores.items():
                out.setdefault(name, []).append(value)
        return out
