"""Semantic segmentation with a frozen backbone: dinov2's linear probe.

Each image (and its mask) is resized so its shorter side is ``image_size`` and centre-cropped;
the frozen encoder's patch tokens are computed once per split; a BatchNorm + 1×1 convolution head
is trained on the train split for ``iterations`` steps and scored on the test split (mIoU, mAcc,
aAcc from the confusion matrix, as mmseg; see :mod:`eqbench.protocols.segmentation.head`). The score
of predicting the training split's most frequent class everywhere is reported beside it.

Under ``torchrun`` the task runs on every process (:attr:`~eqbench.protocols.base.Protocol.
collective`): each encodes a share of the images once, the head trains with
DistributedDataParallel with the total batch kept (``batch_size`` / world size per process), and
the test split's confusion matrices are summed. ``--set work_dir=DIR`` checkpoints the head's
training state there and resumes it after a kill.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eqbench.data.base import DatasetSpec, ImageDataset
from eqbench.data.dense import SegmentationDataset
from eqbench.errors import ConfigError
from eqbench.features.sharding import shard_spans
from eqbench.features.store import batch_spans
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol, open_split
from eqbench.protocols.segmentation.head import (
    HeadTraining,
    Resume,
    confusion_matrix,
    evaluate_head,
    segmentation_scores,
    train_linear_head,
)
from eqbench.train.distributed import DistContext, global_batch_share


@dataclass(frozen=True)
class SegmentationLinearConfig:
    """Options of the linear segmentation task.

    Attributes:
        image_size: side of the square images (and masks) fed to the encoder.
        n_train / n_test: images per split (``None``: the whole split).
        iterations / batch_size / lr / weight_decay / optimizer: head training
            (:class:`~eqbench.protocols.segmentation.head.HeadTraining`); ``batch_size`` is the
            total over the processes of a ``torchrun`` launch.
        probe_seeds: heads trained with seeds ``seed, seed + 1, ...``.
        work_dir: folder where each head's training state is checkpointed every
            ``checkpoint_every`` iterations; a run killed and started again with the same
            ``work_dir`` resumes there (``None``: no checkpoints).
        checkpoint_every: iterations between checkpoints in ``work_dir``.
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
    work_dir: str | None = None
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, not {self.optimizer!r}")
        if self.iterations < 1 or self.batch_size < 1 or self.probe_seeds < 1:
            raise ValueError("iterations, batch_size and probe_seeds must be at least 1")
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")


def open_masked_split(ctx: EvalContext, split: str, n: int | None) -> SegmentationDataset:
    """A split of the context's dataset, which must have segmentation masks."""
    lacking = "segmentation masks. Use shapes (built-in), ade20k:PATH, voc:PATH or coco:PATH."
    return open_split(ctx.dataset, split, n, ctx.seed, SegmentationDataset, lacking)


def encode_masked_split(
    ctx: EvalContext,
    dataset: SegmentationDataset,
    size: int,
    label: str,
    dist_ctx: DistContext | None = None,
    everywhere: bool = True,
) -> tuple[Tensor, Tensor]:
    """Patch-token maps ``(N, D, h, w)`` and masks ``(N, size, size)`` uint8 of ``dataset``.

    With ``dist_ctx`` (a ``torchrun`` launch) each process encodes a contiguous run of whole
    batches (:func:`~eqbench.features.sharding.shard_spans`), so every image is encoded once;
    ``everywhere``: the runs are then gathered on every process in dataset order (the training
    split, which every process samples from), else each process keeps its own run (the test
    split, scored where it lies).
    """
    masks: dict[int, Tensor] = {}

    def make(indices: list[int] | Any) -> Tensor:
        images, batch_masks = dataset.load_pair(indices, size)
        for row, i in enumerate(indices):
            masks[int(i)] = batch_masks[row].to(torch.uint8)
        return images.float().div_(255.0)

    what = {"kind": "segmentation", "size": size}
    if dist_ctx is None:
        feats = ctx.store.patch_maps(dataset, what, make, label=label)
        indices = list(range(len(dataset)))
    else:
        every_batch = batch_spans(len(dataset), ctx.store.batch_size)
        spans = shard_spans(every_batch, dist_ctx.rank, dist_ctx.world_size)
        feats = ctx.store.encode_patch_maps(make, spans, label)
        indices = [i for span in spans for i in span]
    missing = [i for i in indices if i not in masks]  # features from the memory cache
    for lo in range(0, len(missing), 64):
        make(missing[lo : lo + 64])
    labels = (
        torch.stack([masks[i] for i in indices])
        if indices
        else torch.zeros(0, size, size, dtype=torch.uint8)
    )
    if dist_ctx is not None and everywhere:
        parts = [p for p in dist_ctx.all_gather_object((feats, labels)) if len(p[1])]
        feats = torch.cat([f for f, _ in parts])
        labels = torch.cat([m for _, m in parts])
    return feats, labels


def head_run_id(
    ctx: EvalContext, cfg: SegmentationLinearConfig, train: ImageDataset, seed: int
) -> str:
    """What makes a head's training what it is (model, training images, options, seed): the key
    of its checkpoint in ``work_dir``. Not the world size: a run can resume at another scale."""
    blob = {
        "checkpoint": ctx.model.sha256,
        "train": train.fingerprint(),
        "image_size": cfg.image_size,
        "training": {
            k: getattr(cfg, k)
            for k in ("iterations", "batch_size", "lr", "weight_decay", "optimizer")
        },
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


@PROTOCOLS.register("segmentation_linear")
class SegmentationLinear(Protocol):
    """Linear (BatchNorm + 1×1 conv) segmentation head on frozen patch tokens; mIoU.

    Under ``torchrun`` every process encodes its share of the images once, trains the head with
    DistributedDataParallel on its share of each global batch and scores its share of the test
    images; the confusion matrices are summed over the processes.
    """

    Config = SegmentationLinearConfig
    metrics = ("miou", "macc", "aacc", "miou_majority", "aacc_majority")
    units = dict.fromkeys(metrics, "percent")
    collective = True

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        cfg: SegmentationLinearConfig = config
        if cfg.work_dir is not None and Path(cfg.work_dir).is_file():
            raise ConfigError(
                f"--set work_dir='{cfg.work_dir}' is a file, not a folder. Pass a folder for the "
                "segmentation head's training state."
            )

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: SegmentationLinearConfig = config
        dist_ctx = ctx.dist if ctx.dist is not None and ctx.dist.distributed else None
        train = open_masked_split(ctx, "train", cfg.n_train)
        test = open_masked_split(ctx, "test", cfg.n_test)
        total = min(cfg.batch_size, len(train))
        global_batch_share(total, dist_ctx, "segmentation head")  # refused before encoding
        size = cfg.image_size
        x_tr, y_tr = encode_masked_split(ctx, train, size, f"{train.name}/train", dist_ctx)
        x_te, y_te = encode_masked_split(
            ctx, test, size, f"{test.name}/test", dist_ctx, everywhere=False
        )
        k, ignore = train.num_classes, train.ignore_index
        training = HeadTraining(
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            optimizer=cfg.optimizer,
        )
        device = ctx.store.device
        out: MetricValues = {}
        for i in range(cfg.probe_seeds):
            seed = ctx.seed + i
            resume = None
            if cfg.work_dir is not None:
                run_id = head_run_id(ctx, cfg, train, seed)
                path = Path(cfg.work_dir) / f"segmentation_linear-{run_id[:16]}.pt"
                resume = Resume(path, cfg.checkpoint_every, run_id)
            fit = train_linear_head(x_tr, y_tr, k, training, seed, device, dist_ctx, resume)
            scores = evaluate_head(fit.head, x_te, y_te, k, device, dist_ctx=dist_ctx)
            for name in ("miou", "macc", "aacc"):
                out.setdefault(name, []).append(scores[name])
        counts = torch.bincount(y_tr[y_tr != ignore].long().reshape(-1), minlength=k)
        majority = torch.full_like(y_te, int(counts.argmax()))
        confusion = confusion_matrix(majority, y_te, k, ignore)
        if dist_ctx is not None:
            confusion = dist_ctx.all_reduce_sum(confusion)
        base = segmentation_scores(confusion)
        out["miou_majority"] = [base["miou"]]
        out["aacc_majority"] = [base["aacc"]]
        return out
