"""mmdetection config for the Mask R-CNN task.

:func:`detection_config` takes mmdet's own ``_base_/models/mask-rcnn_r50_fpn.py`` (anchors,
assigners, samplers, RoI heads and test settings as shipped) and swaps the ResNet for
:class:`~eqbench.openmmlab.backbone.EqbenchBackbone` (a ViT simple feature pyramid at strides
4/8/16/32 feeding mmdet's FPN neck, as ViTDet and GTSA). Training follows GTSA's recipe: the 1×
schedule (12 epochs, learning rate ×0.1 after epochs 8 and 11), AdamW 5e-5, weight decay 0.05,
1000 linear warm-up iterations; the data pipeline is mmdet's ``coco_instance.py`` with its
``(1333, 800)`` scale expressed through ``image_size`` (800 in the recipe). ``CocoMetric`` scores
box and mask AP on the test split.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqbench.errors import MissingDependencyError
from eqbench.openmmlab import require_openmmlab

require_openmmlab()  # a MissingDependencyError naming scripts/build_mmcv.sh, not an ImportError
from mmengine.config import Config, ConfigDict  # noqa: E402

from eqbench.openmmlab.runner import adamw_optim_wrapper, base_runtime  # noqa: E402
from eqbench.openmmlab.segmentation import SIZE_DIVISOR, UNIT_RANGE  # noqa: E402

#: mmdet's base Mask R-CNN model config, relative to the installed ``mmdet`` package.
BASE_MODEL = ".mim/configs/_base_/models/mask-rcnn_r50_fpn.py"


@dataclass(frozen=True)
class CocoData:
    """A dataset in the COCO layout.

    Attributes:
        root: the dataset folder.
        annotations: ``split -> annotations/instances_<name>.json`` (train and test).
        classes: category names in category-id order (mmdet's label ``i`` is the ``i``-th).
        n_train / n_test: first images of each split to use (``None``: all).
    """

    root: Path
    annotations: dict[str, Path]
    classes: tuple[str, ...]
    n_train: int | None
    n_test: int | None

    def image_folder(self, split: str) -> str:
        """``<name>/`` for ``instances_<name>.json`` (COCO's ``train2017/``, ``val2017/``)."""
        return self.annotations[split].stem.removeprefix("instances_") + "/"


def base_model() -> dict[str, Any]:
    """mmdet's ``mask-rcnn_r50_fpn.py`` model dict, as installed."""
    spec = importlib.util.find_spec("mmdet")
    path = Path(spec.origin if spec and spec.origin else ".").parent / BASE_MODEL
    if not path.is_file():
        raise MissingDependencyError(
            f"mmdet's config files are missing ({path}). Install mmdet 3.3.0 from its wheel "
            "(scripts/build_mmcv.sh does)."
        )
    model: dict[str, Any] = Config.fromfile(str(path)).model.to_dict()
    return model


def _model(cfg: Any, checkpoint: str, embed_dim: int, num_classes: int) -> dict[str, Any]:
    model = base_model()
    ch = cfg.neck_channels
    model["data_preprocessor"] = dict(
        type="DetDataPreprocessor",
        **UNIT_RANGE,
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=SIZE_DIVISOR,
    )
    model["backbone"] = dict(
        type="EqbenchBackbone", checkpoint=checkpoint, img_size=cfg.image_size, frozen=cfg.frozen
    )
    model["neck"].update(in_channels=[embed_dim] * 4, out_channels=ch)
    model["rpn_head"].update(in_channels=ch, feat_channels=ch)
    roi = model["roi_head"]
    roi["bbox_roi_extractor"]["out_channels"] = ch
    roi["mask_roi_extractor"]["out_channels"] = ch
    roi["bbox_head"].update(in_channels=ch, num_classes=num_classes)
    roi["mask_head"].update(in_channels=ch, conv_out_channels=ch, num_classes=num_classes)
    return model


def _dataset(data: CocoData, split: str, scale: tuple[int, int]) -> dict[str, Any]:
    load = [dict(type="LoadImageFromFile")]
    anns = dict(type="LoadAnnotations", with_bbox=True, with_mask=True)
    resize = dict(type="Resize", scale=scale, keep_ratio=True)
    train = split == "train"
    if train:
        pipeline = [*load, anns, resize, dict(type="RandomFlip", prob=0.5)]
        pipeline.append(dict(type="PackDetInputs"))
    else:
        keys = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")
        pipeline = [*load, resize, anns, dict(type="PackDetInputs", meta_keys=keys)]
    return dict(
        type="CocoDataset",
        data_root=str(data.root),
        ann_file=str(data.annotations[split]),
        data_prefix=dict(img=data.image_folder(split)),
        metainfo=dict(classes=data.classes),
        filter_cfg=dict(filter_empty_gt=True, min_size=8) if train else None,
        indices=data.n_train if train else data.n_test,
        test_mode=not train,
        pipeline=pipeline,
    )


def detection_config(
    cfg: Any, checkpoint: str, embed_dim: int, data: CocoData, work_dir: Path, seed: int
) -> Config:
    """The mmengine config of one Mask R-CNN run.

    Args:
        cfg: the task's :class:`~eqbench.protocols.openmmlab.DetectionMmdetConfig`.
        checkpoint: the eqbench model spec the backbone loads.
        embed_dim: channels of the backbone's pyramid levels.
        data: the dataset.
        work_dir: where mmengine writes logs and checkpoints.
        seed: seeds mmengine's ``randomness``.
    """
    scale = (round(cfg.image_size * 1333 / 800), cfg.image_size)
    milestones = sorted({max(1, round(cfg.epochs * m / 12)) for m in (8, 11)})
    loader = dict(num_workers=0, persistent_workers=False)
    schedulers: list[dict[str, Any]] = []
    if cfg.warmup_iters > 0:
        schedulers.append(
            dict(
                type="LinearLR",
                start_factor=0.001,
                by_epoch=False,
                begin=0,
                end=cfg.warmup_iters,
            )
        )
    schedulers.append(
        dict(
            type="MultiStepLR",
            begin=0,
            end=cfg.epochs,
            by_epoch=True,
            milestones=milestones,
            gamma=0.1,
        )
    )
    raw = dict(
        **base_runtime("mmdet", work_dir, seed, cfg.epochs, cfg.checkpoint_interval, by_epoch=True),
        model=_model(cfg, checkpoint, embed_dim, len(data.classes)),
        train_dataloader=dict(
            batch_size=cfg.batch_size,
            sampler=dict(type="DefaultSampler", shuffle=True),
            batch_sampler=dict(type="AspectRatioBatchSampler"),
            dataset=_dataset(data, "train", scale),
            **loader,
        ),
        test_dataloader=dict(
            batch_size=1,
            drop_last=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=_dataset(data, "test", scale),
            **loader,
        ),
        test_evaluator=dict(
            type="CocoMetric",
            ann_file=str(data.annotations["test"]),
            metric=["bbox", "segm"],
            format_only=False,
        ),
        optim_wrapper=adamw_optim_wrapper(cfg.lr, cfg.weight_decay),
        param_scheduler=schedulers,
        train_cfg=dict(
            type="EpochBasedTrainLoop", max_epochs=cfg.epochs, val_interval=cfg.epochs + 1
        ),
        test_cfg=dict(type="TestLoop"),
    )
    return Config(ConfigDict(raw))
