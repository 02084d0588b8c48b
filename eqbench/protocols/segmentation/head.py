"""Frozen-feature semantic segmentation: the linear head and mmseg's IoU metrics.

The head is dinov2's linear segmentation probe (Oquab et al. 2023, "linear" in their Table 5,
after the ``BNHead`` of mmseg): BatchNorm then a 1×1 convolution on the patch-token map
``(B, D, h, w)``, logits upsampled bilinearly to the label size, cross-entropy with an ignore
index. Metrics follow mmseg's ``IoUMetric``: from the confusion matrix over every scored pixel of
the test split, ``aAcc`` = correct / scored pixels, per-class accuracy = correct / pixels of that
class in the labels and IoU = intersection / union; ``mAcc`` and ``mIoU`` are ``nanmean`` s, so a
class absent from the labels is left out of ``mAcc`` and a class absent from both labels and
predictions is left out of ``mIoU`` (one predicted but absent from the labels counts, IoU 0).
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from eqbench.atomic import write_with
from eqbench.data.dense import IGNORE_INDEX
from eqbench.errors import ConfigError
from eqbench.train.distributed import DistContext, global_batch_share

log = logging.getLogger(__name__)


def confusion_matrix(
    pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``(K, K)`` int64 counts, rows = label class, columns = predicted class.

    Pixels whose label is ``ignore_index`` (or outside ``0 .. K-1``) are not counted.
    """
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def segmentation_scores(confusion: Tensor | np.ndarray) -> dict[str, float]:
    """``aAcc``, ``mAcc`` and ``mIoU`` (fractions in [0, 1]) from a confusion matrix, as mmseg.

    Also returns ``n_classes_scored``: the classes that enter ``mIoU``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    label_area, pred_area = cm.sum(axis=1), cm.sum(axis=0)
    union = label_area + pred_area - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(label_area > 0, tp / label_area, np.nan)
    total = cm.sum()
    return {
        "aacc": float(tp.sum() / total) if total > 0 else float("nan"),
        "macc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "n_classes_scored": float(np.isfinite(iou).sum()),
    }


class LinearSegHead(nn.Module):
    """BatchNorm + 1×1 convolution on a patch-token map (dinov2's linear probe).

    Args:
        in_dim: token width ``D``.
        num_classes: number of scored classes ``K``.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_dim)
        self.conv = nn.Conv2d(in_dim, num_classes, kernel_size=1)

    def forward(self, feats: Tensor, size: tuple[int, int]) -> Tensor:
        """Logits ``(B, K, H, W)`` at ``size`` from features ``(B, D, h, w)``."""
        logits = self.conv(self.bn(feats))  # (B, K, h, w)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """:class:`~torch.nn.BatchNorm2d` whose training statistics are those of the global batch,
    summed over the processes of a ``torchrun`` launch, for a head on frozen features.

    ``torch.nn.SyncBatchNorm`` does the same but runs on GPUs only. Here the input is frozen
    features, so the batch mean and variance are constants to every trainable parameter and are
    reduced without a gradient: one ``all_reduce`` of the per-channel sums (float64) per step.
    Evaluation mode and the state dict are :class:`~torch.nn.BatchNorm2d`'s.

    Args:
        dist_ctx: the launch (:func:`eqbench.train.distributed.setup`).
        num_features: channels ``D``.
    """

    def __init__(self, dist_ctx: DistContext, num_features: int) -> None:
        super().__init__(num_features)
        self.dist_ctx = dist_ctx

    @classmethod
    def replacing(cls, bn: nn.BatchNorm2d, dist_ctx: DistContext) -> GlobalBatchNorm2d:
        """A global batch norm holding ``bn``'s settings, parameters and running statistics."""
        out = cls(dist_ctx, bn.num_features).to(bn.weight.device)
        out.eps, out.momentum = bn.eps, bn.momentum
        out.load_state_dict(bn.state_dict())
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``(B, D, h, w)`` with the global batch's statistics (training) or the
        running ones (evaluation)."""
        if not self.training:
            return super().forward(x)
        if x.requires_grad:
            raise ValueError("GlobalBatchNorm2d normalises frozen features only")
        with torch.no_grad():
            x64 = x.double()
            count = x64.new_tensor([x.numel() / x.shape[1]])
            stats = torch.cat([x64.sum(dim=(0, 2, 3)), x64.square().sum(dim=(0, 2, 3)), count])
            stats = self.dist_ctx.all_reduce_sum(stats)
            d = self.num_features
            n = stats[-1]
            mean = stats[:d] / n
            var = (stats[d : 2 * d] / n - mean.square()).clamp_(min=0)  # biased, as in training
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            if momentum is None:  # cumulative moving average, as BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked)
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return F.batch_norm(
            x, mean.to(x.dtype), var.to(x.dtype), self.weight, self.bias, False, 0.0, self.eps
        )


@dataclass(frozen=True)
class HeadTraining:
    """How the head is trained (never tuned on the test split).

    Attributes:
        iterations: optimiser steps.
        batch_size: images per step, in total over the processes of a ``torchrun`` launch
            (each gets ``batch_size / world size``), so a setting means the same at any scale.
        lr: peak learning rate (cosine decay to 0 over ``iterations``).
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9).
    """

    iterations: int = 500
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    optimizer: str = "adamw"


@dataclass(frozen=True)
class Resume:
    """Where :func:`train_linear_head` keeps its training state, to resume after a kill.

    Attributes:
        path: the checkpoint file (written atomically by rank 0).
        every: iterations between checkpoints (and one after the last iteration).
        run_id: identifies the run (model, data, options, seed); a checkpoint of another run is
            refused rather than resumed.
    """

    path: Path
    every: int
    run_id: str


@dataclass
class HeadFit:
    """A trained head and its training losses.

    Attributes:
        head: the head, in evaluation mode.
        losses: ``(iterations,)`` the global batch's loss at each step (float32, CPU); the
            steps before a resume come from the checkpoint.
    """

    head: LinearSegHead
    losses: Tensor


def train_linear_head(
    feats: Tensor,
    masks: Tensor,
    num_classes: int,
    cfg: HeadTraining,
    seed: int,
    device: torch.device,
    dist_ctx: DistContext | None = None,
    resume: Resume | None = None,
    on_step: Callable[[int], None] | None = None,
) -> HeadFit:
    """Fit a :class:`LinearSegHead` on frozen features.

    Every step draws a global batch of ``cfg.batch_size`` images (with replacement, from a
    generator seeded with ``seed``). Launched by ``torchrun`` (``dist_ctx``), every process draws
    the same global batch and trains on its contiguous share of it under
    :class:`~torch.nn.parallel.DistributedDataParallel`; the loss is normalised by the global
    count of scored pixels and the BatchNorm uses the global batch's statistics
    (:class:`GlobalBatchNorm2d`), so each step follows the one-process step's gradient up to the
    order of float sums.

    Args:
        feats: ``(N, D, h, w)`` patch-token maps of the training images (all of them, on every
            process).
        masks: ``(N, H, W)`` labels with ``IGNORE_INDEX`` for unscored pixels.
        num_classes: ``K``.
        cfg: optimiser settings.
        seed: seeds the head's initialisation and the batch order.
        device: where to train.
        dist_ctx: the ``torchrun`` launch; ``None`` or one process: train alone.
        resume: checkpoint the training state there every ``resume.every`` iterations and
            resume from it when it exists (the same steps as an uninterrupted run).
        on_step: called with the number of steps done after each step (and its checkpoint).
    """
    world = dist_ctx if dist_ctx is not None and dist_ctx.distributed else None
    total = min(cfg.batch_size, len(feats))
    first, last = global_batch_share(total, world, "segmentation head")
    torch.manual_seed(seed)
    head = LinearSegHead(feats.shape[1], num_classes).to(device)
    gen = torch.Generator().manual_seed(seed)
    state = load_training_state(resume, world)
    if state is not None:
        head.load_state_dict(state["head"])
    model: nn.Module = head
    if world is not None:
        head.bn = GlobalBatchNorm2d.replacing(head.bn, world)
        ids = [device] if device.type == "cuda" else None
        model = DistributedDataParallel(head, device_ids=ids)
    opt = make_optimizer(model, cfg)
    losses = torch.zeros(cfg.iterations, device=device)  # no sync per step on CUDA
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start = int(state["step"])
        losses[:start] = state["losses"].to(device)
        log.info("seg head resumed at step %d of %d from %s", start, cfg.iterations, resume)
    size = (masks.shape[-2], masks.shape[-1])
    model.train()
    for step in range(start, cfg.iterations):
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.iterations))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(feats), (total,), generator=gen)[first:last]
        x = feats[idx].to(device)  # (B / world, D, h, w)
        y = masks[idx].to(device).long()  # (B / world, H, W)
        logits = model(x, size)  # (B / world, K, H, W)
        if world is None:
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
            losses[step] = loss.detach()
        else:
            loss, losses[step] = _global_mean_loss(logits, y, world)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.iterations - 1:
            log.debug("seg head step %d loss %.4f", step, float(losses[step]))
        done = step + 1
        if resume is not None and (done % resume.every == 0 or done == cfg.iterations):
            save_training_state(resume, head, opt, gen, done, losses[:done], world)
        if on_step is not None:
            on_step(done)
    return HeadFit(head.eval(), losses.cpu())


def make_optimizer(model: nn.Module, cfg: HeadTraining) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum 0.9 over ``model``'s parameters."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"optimizer must be adamw or sgd, not {cfg.optimizer!r}")


def _global_mean_loss(
    logits: Tensor, labels: Tensor, dist_ctx: DistContext
) -> tuple[Tensor, Tensor]:
    """What this process minimises, and the global batch's mean cross-entropy (a float on every
    process).

    This process's sum of pixel losses times the world size over the global count of scored
    pixels: DDP averages gradients over the processes, so the step is the one-process step on
    the global batch's mean, whatever share of the ignored pixels each process holds.
    """
    local = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    sums = torch.stack([(labels != IGNORE_INDEX).sum().double(), local.detach().double()])
    count, total = dist_ctx.all_reduce_sum(sums).unbind()
    count = count.clamp(min=1)
    return local * (dist_ctx.world_size / count).to(local.dtype), (total / count).float()


def save_training_state(
    resume: Resume,
    head: LinearSegHead,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    step: int,
    losses: Tensor,
    dist_ctx: DistContext | None,
) -> None:
    """Write the head, optimiser, batch generator and step to ``resume.path`` atomically (rank 0
    only)."""
    if dist_ctx is not None and not dist_ctx.is_main:
        return
    state = {
        "run_id": resume.run_id,
        "step": step,
        "head": head.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "losses": losses.cpu().clone(),
    }
    resume.path.parent.mkdir(parents=True, exist_ok=True)
    write_with(resume.path, lambda tmp: torch.save(state, tmp))


def load_training_state(resume: Resume | None, dist_ctx: DistContext | None) -> Any:
    """The state :func:`save_training_state` wrote for this run, read by rank 0 and sent to
    every process; ``None`` when there is none.

    Raises:
        ConfigError: the file belongs to another run or cannot be read.
    """
    if resume is None:
        return None
    state: Any = None
    error = ""
    if dist_ctx is None or dist_ctx.is_main:
        state, error = _read_state(resume)
    if dist_ctx is not None:
        state, error = dist_ctx.broadcast_object((state, error))
    if error:
        raise ConfigError(error)
    return state


def _read_state(resume: Resume) -> tuple[Any, str]:
    if not resume.path.is_file():
        return None, ""
    try:
        state = torch.load(resume.path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        return None, (
            f"Cannot read the segmentation head's training state '{resume.path}' ({exc}). "
            "Delete it to train from the start, or pass another --set work_dir."
        )
    if not isinstance(state, dict) or state.get("run_id") != resume.run_id:
        return None, (
            f"'{resume.path}' holds the training state of another run (another model, dataset, "
            "seed or task option). Pass a fresh --set work_dir for this run, or delete the file."
        )
    return state, ""


@torch.inference_mode()
def evaluate_head(
    head: LinearSegHead,
    feats: Tensor,
    masks: Tensor,
    num_classes: int,
    device: torch.device,
    batch_size: int = 64,
    dist_ctx: DistContext | None = None,
) -> dict[str, float]:
    """mIoU, mAcc and aAcc of ``head`` on ``(feats, masks)`` (see :func:`segmentation_scores`).

    With ``dist_ctx``, ``(feats, masks)`` is this process's share of the test images and the
    confusion matrices are summed over the processes (every pixel counted once).
    """
    size = (masks.shape[-2], masks.shape[-1])
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for lo in range(0, len(feats), batch_size):
        x = feats[lo : lo + batch_size].to(device)
        pred = head(x, size).argmax(dim=1)
        cm += confusion_matrix(pred, masks[lo : lo + batch_size].to(device), num_classes)
    if dist_ctx is not None:
        cm = dist_ctx.all_reduce_sum(cm)
    return segmentation_scores(cm)
