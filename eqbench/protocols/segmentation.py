"""Semantic segmentation with a frozen backbone: dinov2's linear probe.

Each image (and its mask) is resized so its shorter side is ``image_size`` and centre-cropped;
the frozen encoder's patch tokens are computed once per split; a BatchNorm + 1×1 convolution head
is trained on the train split for ``iterations`` steps and scored on the test split (mIoU, mAcc,
aAcc from the confusion matrix, as mmseg; see :mod:`eqbench.eval.segmentation`). The score of
predicting the training split's most frequent class everywhere is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eqbench.data.dense import SegmentationDataset
from eqbench.errors import DatasetError
from eqbench.eval.segmentation import (
    HeadTraining,
    confusion_matrix,
    evaluate_head,
    segmentation_scores,
    train_linear_head,
)
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol


@dataclass(frozen=True)
class SegmentationLinearConfig:
    """Options of the linear segmentation task.

    Attributes:
        image_size: side of the square images (and masks) fed to the encoder.
        n_train / n_test: images per split (``None``: the whole split).
        iterations / batch_size / lr / weight_decay / optimizer: head training
            (:class:`~eqbench.eval.segmentation.HeadTraining`).
        probe_seeds: heads trained with seeds ``seed, seed + 1, ...``.
    """

    image_size: int = 64
    n_train: int | None = 500
    n_test: int | None = 100
    iterations: int = 500
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    probe_seeds: int = 1

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, not {self.optimizer!r}")
        if self.iterations < 1 or self.batch_size < 1 or self.probe_seeds < 1:
            raise ValueError("iterations, batch_size and probe_seeds must be at least 1")
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")


def encode_masked_split(
    ctx: EvalContext, split: str, n: int | None, size: int
) -> tuple[Tensor, Tensor, SegmentationDataset]:
    """Patch-token maps ``(N, D, h, w)``, masks ``(N, size, size)`` uint8 and the dataset."""
    dataset = ctx.open(split, n=n)
    if not isinstance(dataset, SegmentationDataset):
        raise DatasetError(
            f"Dataset '{ctx.dataset}' has no segmentation masks. Use shapes (built-in), "
            "ade20k:PATH, voc:PATH or coco:PATH."
        )
    masks: dict[int, Tensor] = {}

    def make(indices: list[int] | Any) -> Tensor:
        images, batch_masks = dataset.load_pair(indices, size)
        for row, i in enumerate(indices):
            masks[int(i)] = batch_masks[row].to(torch.uint8)
        return images.float().div_(255.0)

    feats = ctx.store.patch_maps(
        dataset, {"kind": "segmentation", "size": size}, make, label=f"{dataset.name}/{split}"
    )
    missing = [i for i in range(len(dataset)) if i not in masks]
    for lo in range(0, len(missing), 64):
        make(missing[lo : lo + 64])
    return feats, torch.stack([masks[i] for i in range(len(dataset))]), dataset


@PROTOCOLS.register("segmentation_linear")
class SegmentationLinear(Protocol):
    """Linear (BatchNorm + 1×1 conv) segmentation head on frozen patch tokens; mIoU."""

    Config = SegmentationLinearConfig
    metrics = ("miou", "macc", "aacc", "miou_majority", "aacc_majority")
    units = dict.fromkeys(metrics, "percent")

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: SegmentationLinearConfig = config
        x_tr, y_tr, ds = encode_masked_split(ctx, "train", cfg.n_train, cfg.image_size)
        x_te, y_te, _ = encode_masked_split(ctx, "test", cfg.n_test, cfg.image_size)
        k, ignore = ds.num_classes, ds.ignore_index
        training = HeadTraining(
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            optimizer=cfg.optimizer,
        )
        out: MetricValues = {}
        for i in range(cfg.probe_seeds):
            head = train_linear_head(x_tr, y_tr, k, training, ctx.seed + i, ctx.store.device)
            scores = evaluate_head(head, x_te, y_te, k, ctx.store.device)
            for name in ("miou", "macc", "aacc"):
                out.setdefault(name, []).append(scores[name])
        counts = torch.bincount(y_tr[y_tr != ignore].long().reshape(-1), minlength=k)
        majority = torch.full_like(y_te, int(counts.argmax()))
        base = segmentation_scores(confusion_matrix(majority, y_te, k, ignore))
        out["miou_majority"] = [base["miou"]]
        out["aacc_majority"] = [base["aacc"]]
        return out
