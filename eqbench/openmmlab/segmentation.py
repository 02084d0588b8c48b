"""mmsegmentation configs for the finetuned segmentation tasks (UPerNet, Semantic FPN).

:func:`segmentation_config` writes the mmengine config of one run: mmseg's ``EncoderDecoder``
with :class:`~eqbench.openmmlab.backbone.EqbenchBackbone` and a ``UPerHead`` (plus the FCN
auxiliary head of mmseg's UPerNet configs) or an ``FPN`` neck + ``FPNHead`` (Semantic FPN,
Kirillov et al. 2019), the ADE20K pipeline of mmseg's ``_base_/datasets/ade20k.py`` scaled to the
crop size, AdamW with linear warm-up then poly decay (GTSA's recipe, as mmseg's
``upernet_vit-b16_mln_512x512_160k_ade20k.py``), and ``IoUMetric`` (mIoU, mAcc, aAcc).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqbench.openmmlab import require_openmmlab

require_openmmlab()  # a MissingDependencyError naming scripts/build_mmcv.sh, not an ImportError
from mmengine.config import Config, ConfigDict  # noqa: E402

from eqbench.openmmlab.runner import adamw_optim_wrapper, base_runtime  # noqa: E402

#: Mean/std of the data preprocessors: images go to the backbone in [0, 1] (it normalises).
UNIT_RANGE = {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
#: Feature maps are padded to a multiple of this (the coarsest pyramid stride).
SIZE_DIVISOR = 32


@dataclass(frozen=True)
class SegmentationData:
    """Where an ADE20K-layout dataset lies and what its classes are.

    Attributes:
        root: the ``ADEChallengeData2016`` folder (``images/`` and ``annotations/``).
        classes: class names after reduce-zero-label (label ``v`` in the PNGs is class ``v - 1``).
        n_train / n_test: first images of each split to use (``None``: all).
    """

    root: Path
    classes: tuple[str, ...]
    n_train: int | None
    n_test: int | None


def _dataset(data: SegmentationData, split: str, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    folder = "training" if split == "train" else "validation"
    n = data.n_train if split == "train" else data.n_test
    return dict(
        type="BaseSegDataset",
        data_root=str(data.root),
        data_prefix=dict(img_path=f"images/{folder}", seg_map_path=f"annotations/{folder}"),
        img_suffix=".jpg",
        seg_map_suffix=".png",
        reduce_zero_label=True,
        metainfo=dict(classes=data.classes),
        indices=n,
        pipeline=pipeline,
    )


def _pipelines(crop: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """mmseg's ADE20K pipelines with the 512 crop / (2048, 512) scale replaced by ``crop``."""
    scale = (4 * crop, crop)
    train: list[dict[str, Any]] = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="RandomResize", scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(crop, crop), cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs"),
    ]
    test: list[dict[str, Any]] = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=scale, keep_ratio=True),
        dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="PackSegInputs"),
    ]
    return train, test


def _heads(cfg: Any, dims: list[int], num_classes: int) -> dict[str, Any]:
    norm = dict(type="BN", requires_grad=True)  # SyncBN in the multi-GPU recipe
    loss = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
    common = dict(dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm, align_corners=False)
    if cfg.head == "upernet":
        out: dict[str, Any] = dict(
            decode_head=dict(
                type="UPerHead",
                in_channels=dims,
                in_index=[0, 1, 2, 3],
                pool_scales=(1, 2, 3, 6),
                channels=cfg.head_channels,
                loss_decode=loss,
                **common,
            )
        )
        if cfg.auxiliary_head:
            out["auxiliary_head"] = dict(
                type="FCNHead",
                in_channels=dims[2],
                in_index=2,
                channels=max(cfg.head_channels // 2, 1),
                num_convs=1,
                concat_input=False,
                loss_decode={**loss, "loss_weight": 0.4},
                **common,
            )
        return out
    # Semantic FPN: FPN neck to head_channels * 2 (256 for the paper's 128), FPNHead
    fpn = 2 * cfg.head_channels
    return dict(
        neck=dict(type="FPN", in_channels=dims, out_channels=fpn, num_outs=4),
        decode_head=dict(
            type="FPNHead",
            in_channels=[fpn] * 4,
            in_index=[0, 1, 2, 3],
            feature_strides=[4, 8, 16, 32],
            channels=cfg.head_channels,
            loss_decode=loss,
            **common,
        ),
    )


def segmentation_config(
    cfg: Any, checkpoint: str, embed_dim: int, data: SegmentationData, work_dir: Path, seed: int
) -> Config:
    """The mmengine config of one finetuning run.

    Args:
        cfg: the task's :class:`~eqbench.protocols.openmmlab.SegmentationFinetuneConfig`.
        checkpoint: the eqbench model spec the backbone loads.
        embed_dim: channels of the backbone's pyramid levels.
        data: the dataset.
        work_dir: where mmengine writes logs and checkpoints.
        seed: seeds mmengine's ``randomness``.
    """
    crop = cfg.image_size
    dims = [embed_dim] * 4
    train_pipeline, test_pipeline = _pipelines(crop)
    model = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor",
            **UNIT_RANGE,
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=255,
            size=(crop, crop),
            test_cfg=dict(size_divisor=SIZE_DIVISOR),
        ),
        backbone=dict(
            type="EqbenchBackbone", checkpoint=checkpoint, img_size=crop, frozen=cfg.frozen
        ),
        **_heads(cfg, dims, len(data.classes)),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )
    warmup = min(cfg.warmup_iters, cfg.iterations)
    schedulers: list[dict[str, Any]] = []
    if warmup > 0:
        schedulers.append(
            dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=warmup)
        )
    if warmup < cfg.iterations:
        schedulers.append(
            dict(
                type="PolyLR",
                eta_min=0.0,
                power=cfg.poly_power,
                by_epoch=False,
                begin=warmup,
                end=cfg.iterations,
            )
        )
    loader = dict(num_workers=0, persistent_workers=False)
    raw = dict(
        **base_runtime("mmseg", work_dir, seed, cfg.iterations, cfg.checkpoint_interval),
        model=model,
        train_dataloader=dict(
            batch_size=cfg.batch_size,
            sampler=dict(type="InfiniteSampler", shuffle=True),
            dataset=_dataset(data, "train", train_pipeline),
            **loader,
        ),
        test_dataloader=dict(
            batch_size=1,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=_dataset(data, "test", test_pipeline),
            **loader,
        ),
        test_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        optim_wrapper=adamw_optim_wrapper(cfg.lr, cfg.weight_decay),
        param_scheduler=schedulers,
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=cfg.iterations),
        test_cfg=dict(type="TestLoop"),
    )
    return Config(ConfigDict(raw))
