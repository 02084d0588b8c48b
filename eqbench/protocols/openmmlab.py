"""Finetuned dense tasks run by the OpenMMLab engines (optional; see :mod:`eqbench.openmmlab`).

* ``segmentation_finetune``: mmsegmentation ``EncoderDecoder`` with a UPerNet or Semantic FPN
  head on the backbone's simple feature pyramid; ``IoUMetric`` → mIoU, mAcc, aAcc.
* ``detection_mmdet``: mmdetection Mask R-CNN on the same pyramid; ``CocoMetric`` → box and mask
  AP.

Both train with mmengine's ``Runner`` and score the test split once at the end; under
``torchrun`` (or ``eqbench eval --submit`` on several tasks) every process takes part, with
``batch_size`` the total batch over all of them (:func:`eqbench.openmmlab.runner.distribute`).
The configs
below hold tiny CPU defaults; the task files document GTSA's paper-scale values. When OpenMMLab is
missing, :meth:`Protocol.unavailable` says so and ``eqbench eval`` skips these tasks.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqbench.errors import ConfigError
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol

log = logging.getLogger(__name__)

SEG_HEADS = ("upernet", "semfpn")
#: CocoMetric keys (``coco/<key>``) → eqbench metric names.
COCO_METRICS = {
    "bbox_mAP": "bbox_map",
    "bbox_mAP_50": "bbox_map_50",
    "bbox_mAP_75": "bbox_map_75",
    "segm_mAP": "segm_map",
    "segm_mAP_50": "segm_map_50",
    "segm_mAP_75": "segm_map_75",
}


def _check_common(image_size: int, batch_size: int, n: tuple[int | None, ...]) -> None:
    if image_size < 32 or image_size % 32:
        raise ConfigError(f"image_size must be a multiple of 32 (at least 32), not {image_size}.")
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1.")
    if any(v is not None and v < 1 for v in n):
        raise ConfigError("n_train and n_test must be at least 1 (or null for the whole split).")


@dataclass(frozen=True)
class SegmentationFinetuneConfig:
    """Options of ``segmentation/upernet`` and ``segmentation/semfpn``.

    GTSA's recipe (paper scale): ``image_size=512`` (crop), ``iterations=40000``,
    ``batch_size=16``, AdamW ``lr=6e-5``, ``weight_decay=0.01``, ``warmup_iters=1500``, poly
    decay (``poly_power=1.0``), ``head_channels=512`` (UPerNet) or 128 (Semantic FPN).

    Attributes:
        head: ``upernet`` (UPerHead + FCN auxiliary head) or ``semfpn`` (FPN neck + FPNHead).
        image_size: crop side; ``shapes`` is exported at this size.
        n_train / n_test: images per split (``None``: all; the first ``n`` of a path dataset).
        iterations / batch_size / lr / weight_decay / warmup_iters / poly_power: training.
        head_channels: channels of the decode head.
        auxiliary_head: add mmseg's FCN auxiliary head (weight 0.4; UPerNet only).
        frozen: keep the backbone fixed (only the pyramid and heads train).
        checkpoint_interval: mmengine checkpoint every this many iterations (0: at the end).
        work_dir: keep mmengine's logs and checkpoints here and resume from them (``None``: a
            temporary folder, deleted afterwards).
    """

    head: str = "upernet"
    image_size: int = 64
    n_train: int | None = 64
    n_test: int | None = 16
    iterations: int = 40
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_iters: int = 4
    poly_power: float = 1.0
    head_channels: int = 64
    auxiliary_head: bool = True
    frozen: bool = False
    checkpoint_interval: int = 0
    work_dir: str | None = None

    def __post_init__(self) -> None:
        if self.head not in SEG_HEADS:
            raise ConfigError(f"head must be one of {', '.join(SEG_HEADS)}, not {self.head!r}.")
        if self.head == "semfpn" and self.auxiliary_head:
            raise ConfigError("auxiliary_head is a UPerNet option; set it to false for semfpn.")
        _check_common(self.image_size, self.batch_size, (self.n_train, self.n_test))
        if self.iterations < 1 or self.warmup_iters < 0 or self.head_channels < 2:
            raise ConfigError("iterations must be >= 1, warmup_iters >= 0, head_channels >= 2.")


@dataclass(frozen=True)
class DetectionMmdetConfig:
    """Options of ``detection/maskrcnn_mmdet``.

    GTSA's recipe (paper scale): ``image_size=800`` (mmdet's (1333, 800) scale),
    ``epochs=12`` (1× schedule), ``batch_size=16``, AdamW ``lr=5e-5``, ``weight_decay=0.05``,
    ``warmup_iters=1000``, ``neck_channels=256``.

    Attributes:
        image_size: shorter image side after resizing (the longer at most ``1333/800`` of it);
            ``shapes`` is exported at this size.
        n_train / n_test: images per split (``None``: all; the first ``n`` of a path dataset).
        epochs / batch_size / lr / weight_decay / warmup_iters: training (learning rate ×0.1
            after 8/12 and 11/12 of the epochs).
        neck_channels: channels of the FPN neck and the RPN / RoI heads.
        frozen: keep the backbone fixed.
        checkpoint_interval: mmengine checkpoint every this many epochs (0: at the end).
        work_dir: as in :class:`SegmentationFinetuneConfig`.
    """

    image_size: int = 128
    n_train: int | None = 32
    n_test: int | None = 8
    epochs: int = 2
    batch_size: int = 2
    lr: float = 2e-4
    weight_decay: float = 0.05
    warmup_iters: int = 4
    neck_channels: int = 64
    frozen: bool = False
    checkpoint_interval: int = 0
    work_dir: str | None = None

    def __post_init__(self) -> None:
        _check_common(self.image_size, self.batch_size, (self.n_train, self.n_test))
        if self.epochs < 1 or self.warmup_iters < 0 or self.neck_channels < 2:
            raise ConfigError("epochs must be >= 1, warmup_iters >= 0, neck_channels >= 2.")


def _temp_dir(stack: ExitStack) -> Path:
    """A temporary folder removed when ``stack`` closes (the exported data, the work dir)."""
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="eqbench-mm-")))


def _work_dir(stack: ExitStack, configured: str | None) -> Path:
    """mmengine's work dir: the configured one (kept, so a rerun resumes) or a temporary one."""
    if configured:
        path = Path(configured).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return _temp_dir(stack)


def _finetune_and_test(
    cfg: SegmentationFinetuneConfig | DetectionMmdetConfig,
    ctx: EvalContext,
    export: Callable[..., Any],
    build_config: Callable[..., Any],
) -> dict[str, float]:
    """Export ``ctx.dataset`` with ``export`` (an :mod:`eqbench.openmmlab.data` function), build
    mmengine's config with ``build_config``, then train and test it (on every process).

    The exported data lives in a temporary folder; the work dir is ``cfg.work_dir`` or another
    temporary folder (:func:`_work_dir`). Returns :func:`~eqbench.openmmlab.runner.train_and_test`'s
    test metrics.
    """
    from eqbench.openmmlab.runner import train_and_test

    with ExitStack() as stack:
        work = _work_dir(stack, cfg.work_dir)
        data_dir = _temp_dir(stack)
        data = export(ctx.dataset, cfg.n_train, cfg.n_test, cfg.image_size, ctx.seed, data_dir)
        mm = build_config(cfg, ctx.model.spec, ctx.model.encoder.embed_dim, data, work, ctx.seed)
        return train_and_test(mm, ctx.dist)


class _OpenMMLabProtocol(Protocol):
    #: Under ``torchrun`` every process runs the task: mmengine's own distributed run, the
    #: total ``batch_size`` split over the processes (:func:`eqbench.openmmlab.runner.distribute`).
    collective = True

    @classmethod
    def unavailable(cls) -> str | None:
        from eqbench.openmmlab import missing_openmmlab

        return missing_openmmlab()


@PROTOCOLS.register("segmentation_finetune")
class SegmentationFinetune(_OpenMMLabProtocol):
    """Finetune the backbone with a UPerNet / Semantic FPN head through mmsegmentation."""

    Config = SegmentationFinetuneConfig
    metrics = ("miou", "macc", "aacc")
    units = dict.fromkeys(metrics, "percent")

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        from eqbench.openmmlab import require_openmmlab

        require_openmmlab()
        from eqbench.openmmlab.data import segmentation_data
        from eqbench.openmmlab.segmentation import segmentation_config

        scores = _finetune_and_test(config, ctx, segmentation_data, segmentation_config)
        # IoUMetric reports percentages rounded to 0.01
        return {
            "miou": [scores["mIoU"] / 100],
            "macc": [scores["mAcc"] / 100],
            "aacc": [scores["aAcc"] / 100],
        }


@PROTOCOLS.register("detection_mmdet")
class DetectionMmdet(_OpenMMLabProtocol):
    """Finetune the backbone in an mmdetection Mask R-CNN; COCO box and mask AP."""

    Config = DetectionMmdetConfig
    metrics = tuple(COCO_METRICS.values())
    units = dict.fromkeys(metrics, "percent")

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        from eqbench.openmmlab import require_openmmlab

        require_openmmlab()
        from eqbench.openmmlab.data import coco_data
        from eqbench.openmmlab.detection import detection_config

        scores = _finetune_and_test(config, ctx, coco_data, detection_config)
        out: MetricValues = {}
        for key, name in COCO_METRICS.items():
            value = scores.get(f"coco/{key}")
            if value is None:  # CocoMetric reports nothing when there are no detections at all
                log.warning("CocoMetric gave no %s (no detections); recording 0", key)
                value = 0.0
            out[name] = [max(float(value), 0.0)]
        return out
