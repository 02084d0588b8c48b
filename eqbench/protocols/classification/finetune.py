"""End-to-end finetuning for classification: the MAE / BEiT recipe built from timm's parts.

The recipe is MAE's ``main_finetune.py`` (facebookresearch/mae; He et al., arXiv 2111.06377,
appendix A.2), which follows BEiT (Bao et al., arXiv 2106.08254) and DeiT, and which GTSA's
iNaturalist-2019 runs use unchanged (bok3948/GTSA ``downstream/classification/
iNat19_classification``):

- **Head**: a fresh ``LayerNorm`` (MAE's ``fc_norm``) and ``Linear`` on the pooled feature, the
  linear weights drawn from a truncated normal with std 2e-5 and zero bias (``main_finetune.py``
  line 257: ``trunc_normal_(model.head.weight, std=2e-5)``). The backbone keeps its own final
  norm, so ``avgpool`` averages normalised tokens (MAE drops the final norm when it pools).
- **Optimiser**: AdamW on parameter groups with layer-wise learning-rate decay, as MAE's
  ``util/lr_decay.py`` ``param_groups_lrd`` (lines 15-61) with ``get_layer_id_for_vit`` (lines
  64-76) assign them: patch embedding, CLS and position embedding at layer 0, block ``i`` at
  ``i + 1``, the rest (final norm, ``fc_norm``, head) at the top with scale 1, each layer
  ``layer_decay`` times the one above; no weight decay for 1-D parameters and the model's
  ``no_weight_decay()`` names (``main_finetune.py`` lines 283-286). Computed by timm's
  ``param_groups_layer_decay`` (after BEiT's ``optim_factory.py``) from the backbone's
  ``group_matcher``, less the rule that files a ViT's final norm with its last block (timm's
  choice, not MAE's: :class:`_MaeLayout`).
- **Learning rate**: ``lr = blr · batch_size / 256`` unless ``lr`` is given (line 270), linear
  warm-up then half-cycle cosine to ``min_lr``, set every iteration (MAE ``util/lr_sched.py``
  ``adjust_learning_rate``, lines 9-21, called with the fractional epoch).
- **Data**: timm's ``create_transform(is_training=True)`` with RandAugment
  (``rand-m9-mstd0.5-inc1``), random-resized crop (bicubic), horizontal flip and random erasing
  (``util/datasets.py`` ``build_transform``); mixup / cutmix through ``timm.data.Mixup`` with the
  label smoothing folded into the soft targets, and then ``SoftTargetCrossEntropy``; without
  mixup, ``LabelSmoothingCrossEntropy`` (``main_finetune.py`` lines 221-226, 290-295).
  Evaluation resizes to ``image_size / crop_pct`` and centre-crops ``image_size`` (``crop_pct``
  0.875, 224 of 256).
- **Regularisation**: stochastic depth rising linearly over the blocks to ``drop_path``
  (timm's ``drop_path_rate`` rule), set on the loaded model (:func:`set_drop_path`).

Where eqbench differs: images are read through eqbench's datasets, which hand out square
centre crops (shorter side resized), so the random-resized crop samples from that square, not
the whole photo; bf16 autocast on CUDA (no loss scaler needed) where MAE uses fp16, fp32 on
the CPU. Top-1 and top-5 are measured once, after the last epoch, on the test split: nothing
is selected on it (MAE prints the maximum over epochs; eqbench never reports that).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from timm.data import Mixup, auto_augment, create_transform
from timm.layers import DropPath, trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models._manipulate import MATCH_PREV_GROUP
from timm.optim import param_groups_layer_decay
from torch import Tensor, nn

from eqbench.backbones.base import FEATURE_KINDS, Encoder
from eqbench.data.base import ImageDataset, center_crop, unit_float
from eqbench.device import autocast
from eqbench.errors import EqbenchError

log = logging.getLogger(__name__)

FEATURES = ("auto", *FEATURE_KINDS)
MIXUP_MODES = ("batch", "pair", "elem")
ERASE_MODES = ("const", "rand", "pixel")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")
#: MAE's head initialisation (``main_finetune.py`` line 257).
HEAD_INIT_STD = 2e-5
#: Names of the head's parameters in :class:`_MaeLayout` (matched by no timm group rule).
HEAD_PREFIX = "~finetune_head."


def _in(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False,
        hi_open: bool = False) -> None:  # fmt: skip
    """Raise ``ValueError`` unless ``value`` lies in the interval (finite)."""
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo)
    ok = ok and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must lie in {left}{lo}, {hi}{right}, got {value}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of the finetuning task (MAE ``main_finetune.py`` names where they exist).

    Attributes:
        image_size: training and evaluation input size.
        feature: the pooled feature the head reads (``avgpool``: MAE's and GTSA's global pool;
            ``auto``: the feature an eqbench checkpoint's method trained, else ``cls``).
        n_train / n_test: images per split (``None``: the whole split).
        epochs / warmup_epochs: training length and linear warm-up, in epochs (a warm-up as
            long as the run never reaches the cosine part).
        batch_size: images per optimiser step (even when mixup or cutmix is on).
        lr: absolute peak learning rate; ``None``: ``blr · batch_size / 256``.
        blr: base learning rate (per 256 images).
        min_lr: floor of the cosine schedule.
        weight_decay: AdamW's decoupled weight decay (not on 1-D parameters).
        layer_decay: layer-wise learning-rate decay, in (0, 1] (1: none).
        drop_path: stochastic-depth rate of the last block.
        clip_grad: gradient-norm clipping (``None``: none, as MAE's default).
        auto_augment: timm augmentation policy (``rand-m9-mstd0.5-inc1``), ``None`` for none.
        interpolation: of the random-resized crop.
        reprob / remode / recount: random erasing probability, mode and count.
        mixup / cutmix: Beta parameters (0: off); mixup_prob: chance a batch is mixed;
            mixup_switch_prob: chance cutmix is used when both are on; mixup_mode: per batch,
            pair or element.
        smoothing: label smoothing.
        crop_pct: evaluation centre crop (resize to ``image_size / crop_pct`` first).
        num_workers: data-loading processes (0: in the main process).
        amp: bf16 autocast on CUDA (the CPU always runs fp32).
    """

    image_size: int = 64
    feature: str = "avgpool"
    n_train: int | None = None
    n_test: int | None = None
    epochs: int = 10
    warmup_epochs: float = 1.0
    batch_size: int = 64
    lr: float | None = None
    blr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    clip_grad: float | None = None
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    interpolation: str = "bicubic"
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1
    crop_pct: float = 0.875
    num_workers: int = 0
    amp: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {', '.join(FEATURES)}, not {self.feature!r}")
        for name in ("n_train", "n_test"):
            n = getattr(self, name)
            if n is not None and n < 1:
                raise ValueError(f"{name} must be >= 1 (or null for the whole split), got {n}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        _in("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.mixup_active and self.batch_size % 2:
            raise ValueError(
                f"batch_size must be even with mixup or cutmix on (timm's Mixup mixes a batch "
                f"with its reverse), got {self.batch_size}"
            )
        if self.lr is not None:
            _in("lr", self.lr, 0, math.inf, lo_open=True, hi_open=True)
        _in("blr", self.blr, 0, math.inf, lo_open=True, hi_open=True)
        _in("min_lr", self.min_lr, 0, self.peak_lr)
        _in("weight_decay", self.weight_decay, 0, math.inf, hi_open=True)
        _in("layer_decay", self.layer_decay, 0, 1, lo_open=True)
        _in("drop_path", self.drop_path, 0, 1, hi_open=True)
        if self.clip_grad is not None:
            _in("clip_grad", self.clip_grad, 0, math.inf, lo_open=True, hi_open=True)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}")
        _in("reprob", self.reprob, 0, 1)
        if self.remode not in ERASE_MODES:
            raise ValueError(f"remode must be one of {', '.join(ERASE_MODES)}")
        if self.recount < 1:
            raise ValueError(f"recount must be >= 1, got {self.recount}")
        _in("mixup", self.mixup, 0, math.inf, hi_open=True)
        _in("cutmix", self.cutmix, 0, math.inf, hi_open=True)
        _in("mixup_prob", self.mixup_prob, 0, 1)
        _in("mixup_switch_prob", self.mixup_switch_prob, 0, 1)
        if self.mixup_mode not in MIXUP_MODES:
            raise ValueError(f"mixup_mode must be one of {', '.join(MIXUP_MODES)}")
        _in("smoothing", self.smoothing, 0, 1, hi_open=True)
        _in("crop_pct", self.crop_pct, 0, 1, lo_open=True)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.auto_augment is not None:
            try:  # timm parses the policy string here; a typo fails now, not in a worker
                train_transform(self, (0.5,) * 3, (0.5,) * 3)
            except (ValueError, KeyError, AssertionError, IndexError) as err:
                raise ValueError(
                    f"auto_augment {self.auto_augment!r} is not a timm policy ({err}); use e.g. "
                    "rand-m9-mstd0.5-inc1 (RandAugment), augmix-m5-w4-d2, original or null"
                ) from None

    @property
    def mixup_active(self) -> bool:
        """Whether batches are mixed (MAE: ``mixup > 0 or cutmix > 0``)."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def peak_lr(self) -> float:
        """The absolute learning rate: ``lr``, or ``blr · batch_size / 256`` (MAE)."""
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256

    @property
    def load_size(self) -> int:
        """Side of the square images read from the dataset (``image_size / crop_pct``)."""
        return max(self.image_size, int(self.image_size / self.crop_pct))


# --- model ----------------------------------------------------------------------------------


class FinetuneClassifier(nn.Module):
    """A backbone with a fresh ``LayerNorm`` + ``Linear`` head on its pooled feature.

    Args:
        encoder: the backbone (trained in place: pass a copy to keep the original).
        feature: which pooled feature the head reads (:meth:`Features.pooled`).
        num_classes: outputs of the head.
        image_size: input size used once to measure the feature's width.
    """

    def __init__(self, encoder: Encoder, feature: str, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature = feature
        was_training = encoder.training
        with torch.no_grad():
            mean: Tensor = encoder.mean  # type: ignore[assignment]
            probe = torch.zeros(1, 3, image_size, image_size, device=mean.device)
            dim = int(encoder.eval().forward_tokens(probe).pooled(feature).shape[-1])
        encoder.train(was_training)
        self.fc_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.head.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of *normalised* images ``(B, 3, H, W)``."""
        pooled = self.encoder.forward_tokens(x).pooled(self.feature)  # (B, D)
        out: Tensor = self.head(self.fc_norm(pooled))
        return out


def set_drop_path(encoder: Encoder, rate: float) -> bool:
    """Stochastic depth on a loaded ViT: block ``i`` of ``n`` drops its residual branches with
    probability ``rate · i / (n − 1)`` (timm's and MAE's ``torch.linspace(0, rate, depth)``).

    Returns:
        ``False`` when the backbone has no ViT blocks with ``drop_path1`` / ``drop_path2``
        slots (nothing was changed).
    """
    blocks = getattr(getattr(encoder, "model", None), "blocks", None)
    if blocks is None or not all(hasattr(b, "drop_path1") for b in blocks):
        return False
    rates = torch.linspace(0, rate, len(blocks)).tolist()
    for block, p in zip(blocks, rates, strict=True):
        for slot in ("drop_path1", "drop_path2"):
            if hasattr(block, slot):
                setattr(block, slot, DropPath(p) if p > 0 else nn.Identity())
    return True


class _MaeLayout(nn.Module):
    """The parameters :func:`param_groups` hands to timm's ``param_groups_layer_decay``.

    The backbone's parameters under its own names, the head's under :data:`HEAD_PREFIX`, and
    the backbone's ``group_matcher`` without its ``MATCH_PREV_GROUP`` rules. timm's rules put a
    ViT's final ``norm`` in the last block's layer and anything unmatched (a classifier) in a
    layer of its own above; MAE's ``get_layer_id_for_vit`` puts everything that is neither
    stem nor block (final norm, ``fc_norm``, head) in one top layer. Dropping those rules leaves
    the final norm unmatched, so it shares the top layer with the head, as in MAE. Nothing here
    owns parameters: it only names them.
    """

    def __init__(self, backbone: nn.Module, head: list[nn.Module]) -> None:
        super().__init__()
        self._parts = (backbone, head)  # a tuple: not registered as submodules

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        backbone, head = self._parts
        yield from backbone.named_parameters()
        for i, module in enumerate(head):
            for name, param in module.named_parameters():
                yield f"{HEAD_PREFIX}{i}.{name}", param

    def group_matcher(self, coarse: bool = False) -> Any:
        matcher = self._parts[0].group_matcher(coarse=coarse)  # type: ignore[operator]
        if not isinstance(matcher, dict):
            return matcher
        return {
            group: [r for r in rules if tuple(r[1] or ()) != MATCH_PREV_GROUP]
            if isinstance(rules, list | tuple)
            else rules
            for group, rules in matcher.items()
        }


def param_groups(
    model: FinetuneClassifier, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay (``lr_scale`` per group).

    timm's ``param_groups_layer_decay`` over the backbone's timm module and the new head, laid
    out as MAE's ``param_groups_lrd`` (:class:`_MaeLayout`; tested against a copy of MAE's
    function): stem at layer 0, block ``i`` at ``i + 1``, final norm and head at the top with
    scale 1; no weight decay for 1-D parameters and the module's ``no_weight_decay()`` names.
    """
    module: nn.Module = getattr(model.encoder, "model", model.encoder)
    named = getattr(module, "no_weight_decay", None)
    no_decay = named() if callable(named) else ()
    if not callable(getattr(module, "group_matcher", None)):
        log.warning("%s has no timm group_matcher: timm groups its layers itself", module)
        layout: nn.Module = module
        extra = [model.fc_norm, model.head]
    else:
        layout, extra = _MaeLayout(module, [model.fc_norm, model.head]), []
    groups: list[dict[str, Any]] = param_groups_layer_decay(
        layout, weight_decay=weight_decay, no_weight_decay_list=no_decay, layer_decay=layer_decay
    )
    head = [p for m in extra for p in m.parameters()]
    for decay, params in ((weight_decay, [p for p in head if p.ndim > 1]),
                          (0.0, [p for p in head if p.ndim <= 1])):  # fmt: skip
        if params:
            groups.append({"lr_scale": 1.0, "weight_decay": decay, "params": params})
    return groups


def learning_rate(epoch: float, cfg: FinetuneConfig) -> float:
    """MAE's ``adjust_learning_rate``: linear warm-up to the peak, then half-cycle cosine to
    ``min_lr``, at a fractional ``epoch``."""
    peak = cfg.peak_lr
    if epoch < cfg.warmup_epochs:  # never true past the warm-up, so the cosine's span is > 0
        return peak * epoch / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# --- data -----------------------------------------------------------------------------------


def posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's ``posterize`` with the Pillow < 10 meaning of keeping 0 bits (a black image).

    RandAugment's ``PosterizeIncreasing`` keeps ``4 − int(0.4 · magnitude)`` bits, 0 at the
    largest magnitude (10, reached by ``mstd0.5`` draws clipped there); Pillow now raises on 0
    bits, where the Pillow MAE and GTSA ran with masked every bit off.
    """
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    out: Image.Image = auto_augment.posterize(img, bits_to_keep)
    return out


def _patch_posterize(transform: Any) -> None:
    """Swap :func:`posterize` into every timm augmentation op of ``transform``."""
    stack = list(getattr(transform, "transforms", [transform]))
    while stack:
        item = stack.pop()
        if isinstance(item, auto_augment.AugmentOp):
            if item.aug_fn is auto_augment.posterize:
                item.aug_fn = posterize
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            stack.extend(getattr(item, "ops", []))  # RandAugment, AugMix
            stack.extend(getattr(item, "policy", []))  # AutoAugment: sub-policies of ops


def train_transform(cfg: FinetuneConfig, mean: Sequence[float], std: Sequence[float]) -> Any:
    """timm's training transform (PIL image → normalised tensor), as MAE's ``build_transform``."""
    transform = create_transform(
        input_size=cfg.image_size,
        is_training=True,
        color_jitter=None,  # type: ignore[arg-type]  # MAE's default; timm accepts it
        auto_augment=cfg.auto_augment,
        interpolation=cfg.interpolation,
        re_prob=cfg.reprob,
        re_mode=cfg.remode,
        re_count=cfg.recount,
        mean=tuple(mean),
        std=tuple(std),
    )
    _patch_posterize(transform)
    return transform


class AugmentedImages(torch.utils.data.Dataset[tuple[Tensor, int]]):
    """A split read image by image at ``load_size`` and passed through ``transform``."""

    def __init__(self, data: ImageDataset, load_size: int, transform: Any) -> None:
        self.data, self.load_size, self.transform = data, load_size, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.data.load([index], self.load_size)[0]  # (3, S, S) uint8
        pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
        return self.transform(pil), int(self.data.labels[index])


def mixup_fn(cfg: FinetuneConfig, num_classes: int) -> Mixup | None:
    if not cfg.mixup_active:
        return None
    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        mode=cfg.mixup_mode,
        label_smoothing=cfg.smoothing,
        num_classes=num_classes,
    )


def criterion(cfg: FinetuneConfig) -> nn.Module:
    """MAE's choice: soft-target CE after mixup, label smoothing CE, else plain CE."""
    if cfg.mixup_active:
        return SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return nn.CrossEntropyLoss()


# --- scoring --------------------------------------------------------------------------------


def topk_hits(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Per sample, whether the label is among the ``k`` highest logits ``(B, C)``; ties go to
    the lower class index; with fewer than ``k`` classes every class counts."""
    k = min(k, logits.shape[1])
    top = torch.argsort(-logits.float(), dim=1, stable=True)[:, :k]
    return (top == labels[:, None]).any(dim=1)


@torch.inference_mode()
def evaluate(
    model: FinetuneClassifier,
    data: ImageDataset,
    cfg: FinetuneConfig,
    device: torch.device,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy on ``data`` (resize, centre crop, no augmentation)."""
    model.eval()
    hits = {1: 0, 5: 0}
    bar = progress.add_task("test", total=len(data)) if progress is not None else None
    for lo in range(0, len(data), cfg.batch_size):
        idx = list(range(lo, min(lo + cfg.batch_size, len(data))))
        images = unit_float(center_crop(data.load(idx, cfg.load_size), cfg.image_size))
        x = model.encoder.normalize(images.to(device))
        with autocast(device, cfg.amp):
            logits = model(x)  # (B, C)
        labels = torch.as_tensor(data.labels[idx], device=device)
        for k in hits:
            hits[k] += int(topk_hits(logits, labels, k).sum())
        if progress is not None and bar is not None:
            progress.advance(bar, len(idx))
    return {"top1": hits[1] / len(data), "top5": hits[5] / len(data)}


# --- training -------------------------------------------------------------------------------


def train_one_epoch(
    model: FinetuneClassifier,
    loader: torch.utils.data.DataLoader[tuple[Tensor, int]],
    optimizer: torch.optim.Optimizer,
    mix: Mixup | None,
    loss_fn: nn.Module,
    cfg: FinetuneConfig,
    epoch: int,
    device: torch.device,
    advance: Callable[..., None],
) -> float:
    """One pass over ``loader`` (MAE ``engine_finetune.py`` ``train_one_epoch``); returns the
    mean loss. ``advance(description=...)`` is called after every step."""
    model.train()
    total, steps = 0.0, len(loader)
    for step, (x, y) in enumerate(loader):
        set_learning_rate(optimizer, learning_rate(epoch + step / steps, cfg))
        x = x.to(device, non_blocking=True)  # (B, 3, S, S) normalised
        y = y.to(device, non_blocking=True)  # (B,)
        if mix is not None:
            x, y = mix(x, y)  # y: (B, C) soft targets
        with autocast(device, cfg.amp):
            logits = model(x)  # (B, C)
        loss = loss_fn(logits.float(), y)
        value = loss.item()
        if not math.isfinite(value):
            raise EqbenchError(
                f"The finetuning loss became {value} at epoch {epoch}, step {step}. Lower lr "
                "(or blr), or set clip_grad."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        total += value
        advance(description=f"epoch {epoch + 1}/{cfg.epochs} loss {value:.3f}")
    return total / steps


@dataclass
class FinetuneResult:
    """What :func:`finetune` measured.

    Attributes:
        top1 / top5: test accuracy after the last epoch (fractions).
        train_loss: mean training loss of the last epoch.
        lr: the absolute peak learning rate used.
        drop_path_applied: whether stochastic depth could be set on the backbone.
        seconds: wall time of training and testing.
        losses: mean training loss per epoch.
    """

    top1: float
    top5: float
    train_loss: float
    lr: float
    drop_path_applied: bool
    seconds: float
    losses: list[float] = field(default_factory=list)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and ``random`` (timm's augmentations draw from the latter two) and
    restore their states afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]finetune[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show,
        transient=True,
    )


def finetune(
    encoder: Encoder,
    train: ImageDataset,
    test: ImageDataset,
    cfg: FinetuneConfig,
    *,
    device: torch.device,
    seed: int = 0,
    show_progress: bool = False,
) -> FinetuneResult:
    """Finetune ``encoder`` end to end with a new head on ``train``; score ``test``.

    Args:
        encoder: the backbone, trained in place (pass a copy to keep the original).
        train / test: labelled splits; classes are ``train.classes``.
        cfg: the recipe.
        device: where to train (bf16 autocast on CUDA when ``cfg.amp``).
        seed: seeds the head, the batch order, the augmentations and mixup.
        show_progress: draw a progress bar.

    Raises:
        EqbenchError: fewer training images than one batch, a backbone without trainable
            weights, or a loss that is not finite.
    """
    start = time.perf_counter()
    if len(train) < cfg.batch_size:
        raise EqbenchError(
            f"The train split has {len(train)} images, fewer than one batch of "
            f"{cfg.batch_size}. Lower batch_size or raise n_train."
        )
    if not any(p.requires_grad for p in encoder.parameters()):
        raise EqbenchError(
            f"Backbone '{encoder.arch}' has no trainable weights, so there is nothing to "
            "finetune. Use classification/linear for it."
        )
    with seeded(seed):
        applied = set_drop_path(encoder, cfg.drop_path)
        if not applied and cfg.drop_path > 0:
            log.warning("drop_path %.2g not applied: %s has no ViT blocks", cfg.drop_path,
                        encoder.arch)  # fmt: skip
        model = FinetuneClassifier(encoder, cfg.feature, len(train.classes), cfg.image_size)
        model = model.to(device)
        optimizer = torch.optim.AdamW(  # fused: one kernel per step, on the CPU too
            param_groups(model, cfg.weight_decay, cfg.layer_decay), lr=cfg.peak_lr, fused=True
        )
        transform = train_transform(cfg, encoder.mean.flatten().tolist(),  # type: ignore[operator]
                                    encoder.std.flatten().tolist())  # type: ignore[operator]  # fmt: skip
        loader = torch.utils.data.DataLoader(
            AugmentedImages(train, cfg.load_size, transform),
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        mix, loss_fn = mixup_fn(cfg, len(train.classes)), criterion(cfg)
        losses: list[float] = []
        with _progress(show_progress) as progress:
            bar = progress.add_task("train", total=cfg.epochs * len(loader))
            for epoch in range(cfg.epochs):
                step = functools.partial(progress.update, bar, advance=1)
                losses.append(
                    train_one_epoch(
                        model, loader, optimizer, mix, loss_fn, cfg, epoch, device, step
                    )
                )
                log.info("finetune epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, losses[-1])
            scores = evaluate(model, test, cfg, device, progress)
    return FinetuneResult(
        top1=scores["top1"],
        top5=scores["top5"],
        train_loss=losses[-1],
        lr=cfg.peak_lr,
        drop_path_applied=applied,
        seconds=time.perf_counter() - start,
        losses=losses,
    )
