"""The OpenMMLab engines: backbone bridge, metrics against eqbench / pycocotools, tiny end-to-end
runs of each task, and mmengine resume with torch's ``weights_only`` check left on.

Skipped (with the reason) where OpenMMLab is not installed, failed where the run requires it
(``EQBENCH_REQUIRE``, tests/optional.py); ``scripts/test.sh`` installs it through
``scripts/build_mmcv.sh`` and requires it, so CI runs these.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from optional import missing
from torch import nn

from eqbench.openmmlab import missing_openmmlab

missing("openmmlab", missing_openmmlab())

from mmengine.config import ConfigDict  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from eqbench.backbones.pyramid import SimpleFeaturePyramid  # noqa: E402
from eqbench.data.base import DatasetSpec  # noqa: E402
from eqbench.data.export import ExportConfig, export_shapes  # noqa: E402
from eqbench.data.shapes import CLASSES  # noqa: E402
from eqbench.models import load_model  # noqa: E402
from eqbench.openmmlab.backbone import EqbenchBackbone, register_backbone  # noqa: E402
from eqbench.openmmlab.data import segmentation_data  # noqa: E402
from eqbench.openmmlab.runner import mmengine_safe_globals, register_hooks  # noqa: E402
from eqbench.openmmlab.segmentation import segmentation_config  # noqa: E402
from eqbench.protocols.detection.maskrcnn import build_maskrcnn  # noqa: E402
from eqbench.protocols.openmmlab import SegmentationFinetuneConfig  # noqa: E402
from eqbench.protocols.run import EvalConfig, evaluate  # noqa: E402
from eqbench.protocols.segmentation.head import confusion_matrix, segmentation_scores  # noqa: E402

SPEC = "baseline:random:micro_vit"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_simple_feature_pyramid_strides() -> None:
    fpn = SimpleFeaturePyramid(dim=8, out_channels=None, in_stride=16)
    outs = fpn(torch.randn(2, 8, 4, 6))  # a 64 x 96 input at stride 16
    assert [tuple(o.shape[-3:]) for o in outs] == [(8, 16, 24), (8, 8, 12), (8, 4, 6), (8, 2, 3)]
    resnet_like = SimpleFeaturePyramid(dim=4, out_channels=6, in_stride=32, out_strides=(8, 32))
    assert [o.shape[-3:] for o in resnet_like(torch.randn(1, 4, 2, 2))] == [(6, 8, 8), (6, 2, 2)]


def test_both_maskrcnn_tasks_build_one_pyramid() -> None:
    """detection/maskrcnn (torchvision) and detection/maskrcnn_mmdet (EqbenchBackbone) use the
    same ViTDet pyramid: the same class, the same layers (LayerNorm, no BatchNorm)."""
    from mmdet.registry import MODELS

    register_backbone()
    mmdet = MODELS.build(ConfigDict(type="EqbenchBackbone", checkpoint=SPEC, img_size=64))
    encoder = load_model(SPEC, img_size=64).encoder
    torchvision = build_maskrcnn(encoder, 3, 64, frozen=False, out_channels=64).backbone
    pyramids = (mmdet.pyramid, torchvision.pyramid)
    assert all(type(p) is SimpleFeaturePyramid for p in pyramids)
    assert str(pyramids[0]) == str(pyramids[1])
    assert not any(isinstance(m, nn.BatchNorm2d) for p in pyramids for m in p.modules())


def test_backbone_keeps_checkpoint_weights_and_freezes() -> None:
    """mmengine's init_weights must not re-initialise the loaded encoder (timm's ViT has an
    init_weights of its own), and ``frozen`` keeps it fixed and in eval mode."""
    from mmseg.registry import MODELS

    register_backbone()
    reference = load_model(SPEC, img_size=64).encoder.state_dict()
    backbone = MODELS.build(
        ConfigDict(type="EqbenchBackbone", checkpoint=SPEC, img_size=64, frozen=True)
    )
    assert isinstance(backbone, EqbenchBackbone)
    backbone.init_weights()
    state = backbone.encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in reference.items())
    backbone.train()
    assert not backbone.encoder.training and backbone.pyramid.training
    assert not any(p.requires_grad for p in backbone.encoder.parameters())
    outs = backbone(torch.rand(2, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(64, 16, 16), (64, 8, 8), (64, 4, 4), (64, 2, 2)]
    assert backbone.out_channels == [64] * 4


def _sem_seg_samples(preds: torch.Tensor, labels: torch.Tensor) -> list[dict[str, Any]]:
    return [
        {"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": g[None]}}
        for p, g in zip(preds, labels, strict=True)
    ]


def test_iou_metric_matches_eqbench_miou() -> None:
    """mmseg's IoUMetric and eqbench's confusion-matrix metric agree on fixed predictions
    (with ignored pixels, a class never in the labels but predicted, one absent from both)."""
    from mmseg.evaluation import IoUMetric

    k = 6
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (5, 24, 24), generator=gen)  # classes 4 and 5 never labelled
    labels[:, :3] = 255  # ignored
    preds = torch.where(
        torch.rand(labels.shape, generator=gen) < 0.7,
        labels.clamp(max=3),
        torch.randint(0, 5, labels.shape, generator=gen),  # sometimes class 4, never 5
    )
    ours = segmentation_scores(confusion_matrix(preds, labels, k))

    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": tuple(f"c{i}" for i in range(k))}
    metric.process({}, _sem_seg_samples(preds, labels))
    mm = metric.compute_metrics(metric.results)  # percentages rounded to 0.01
    for ours_key, mm_key in (("miou", "mIoU"), ("macc", "mAcc"), ("aacc", "aAcc")):
        assert ours[ours_key] * 100 == pytest.approx(float(mm[mm_key]), abs=0.005 + 1e-9)
    # unrounded: mmseg's own per-class areas give the same fractions (mmseg counts in float32)
    areas = [sum(parts) for parts in zip(*metric.results, strict=True)]
    per_class = IoUMetric.total_area_to_metrics(*areas, metrics=["mIoU"])
    assert float(np.nanmean(per_class["IoU"])) == pytest.approx(ours["miou"], rel=1e-6)
    assert float(np.nanmean(per_class["Acc"])) == pytest.approx(ours["macc"], rel=1e-6)
    assert float(per_class["aAcc"]) == pytest.approx(ours["aacc"], rel=1e-6)
    assert 0.2 < ours["miou"] < 0.9


def _fixed_detections(coco: COCO, seed: int) -> dict[int, dict[str, np.ndarray]]:
    """Jittered copies of most ground-truth objects plus one false positive per image."""
    rng = np.random.default_rng(seed)
    out = {}
    for img_id in coco.getImgIds():
        info = coco.imgs[img_id]
        h, w = info["height"], info["width"]
        boxes, scores, labels, masks = [], [], [], []
        for ann in coco.imgToAnns[img_id]:
            if rng.random() < 0.2:
                continue  # a miss
            x, y, bw, bh = ann["bbox"]
            d = rng.normal(0, 2, 4)
            boxes.append([x + d[0], y + d[1], x + bw + d[2], y + bh + d[3]])
            scores.append(rng.uniform(0.3, 1.0))
            labels.append(ann["category_id"] - 1)
            masks.append(np.roll(coco.annToMask(ann), int(rng.integers(-2, 3)), axis=1))
        fp = np.zeros((h, w), np.uint8)
        fp[2:14, 3:17] = 1
        boxes.append([3, 2, 17, 14])
        scores.append(rng.uniform(0.0, 0.6))
        labels.append(int(rng.integers(0, len(CLASSES) - 1)))
        masks.append(fp)
        out[img_id] = {
            "bboxes": np.asarray(boxes, np.float32),
            "scores": np.asarray(scores, np.float32),
            "labels": np.asarray(labels, np.int64),
            "masks": np.stack(masks).astype(bool),
        }
    return out


def _cocoeval_stats(coco: COCO, dets: dict[int, dict[str, np.ndarray]], iou_type: str) -> Any:
    results = []
    for img_id, d in dets.items():
        for box, score, label, m in zip(
            d["bboxes"], d["scores"], d["labels"], d["masks"], strict=True
        ):
            x1, y1, x2, y2 = (float(v) for v in box)
            r: dict[str, Any] = {"image_id": img_id, "category_id": int(label) + 1}
            r["score"] = float(score)
            if iou_type == "bbox":
                r["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                r["segmentation"] = rle
            results.append(r)
    ev = COCOeval(coco, coco.loadRes(results), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def test_coco_metric_matches_cocoeval(tmp_path: Path) -> None:
    """mmdet's CocoMetric gives pycocotools' COCOeval numbers (to its 3 decimals)."""
    from mmdet.evaluation import CocoMetric

    root = export_shapes(
        ExportConfig(out=tmp_path / "coco", format="coco", n_train=1, n_val=6, size=64)
    )
    ann_file = root / "annotations" / "instances_val2017.json"
    coco = COCO(str(ann_file))
    dets = _fixed_detections(coco, seed=0)
    metric = CocoMetric(ann_file=str(ann_file), metric=["bbox", "segm"])
    metric.dataset_meta = {"classes": CLASSES[1:]}
    samples = []
    for img_id, d in dets.items():
        pred = {k: torch.from_numpy(v) for k, v in d.items()}
        samples.append({"img_id": img_id, "ori_shape": (64, 64), "pred_instances": pred})
    metric.process({}, samples)
    mm = metric.compute_metrics(metric.results)
    for iou_type in ("bbox", "segm"):
        stats = _cocoeval_stats(coco, dets, iou_type)
        for i, suffix in enumerate(("mAP", "mAP_50", "mAP_75")):
            assert mm[f"{iou_type}_{suffix}"] == pytest.approx(stats[i], abs=5e-4 + 1e-9)
        assert 0.1 < stats[0] < 0.95


def test_torchvision_and_mmdet_engines_score_the_same_predictions_identically(
    tmp_path: Path,
) -> None:
    """The same fixed detections through eqbench's torchvision path (``coco_results`` +
    ``coco_ap``) and through mmdet's CocoMetric give the same box and mask AP."""
    from mmdet.evaluation import CocoMetric

    from eqbench.protocols.detection.maskrcnn import coco_ap, coco_results

    root = export_shapes(
        ExportConfig(out=tmp_path / "coco", format="coco", n_train=1, n_val=6, size=64)
    )
    ann_file = root / "annotations" / "instances_val2017.json"
    coco = COCO(str(ann_file))
    dets = _fixed_detections(coco, seed=1)
    # torchvision engine: detector outputs with category ids as labels, masks as probabilities
    outputs = [
        {
            "boxes": torch.from_numpy(d["bboxes"]),
            "labels": torch.from_numpy(d["labels"] + 1),
            "scores": torch.from_numpy(d["scores"]),
            "masks": torch.from_numpy(d["masks"]).float()[:, None],
        }
        for d in dets.values()
    ]
    ground_truth = json.loads(ann_file.read_text())
    ours = coco_ap(ground_truth, coco_results(outputs, list(dets)))
    # mmdet engine
    metric = CocoMetric(ann_file=str(ann_file), metric=["bbox", "segm"])
    metric.dataset_meta = {"classes": CLASSES[1:]}
    samples = [
        {
            "img_id": img_id,
            "ori_shape": (64, 64),
            "pred_instances": {k: torch.from_numpy(v) for k, v in d.items()},
        }
        for img_id, d in dets.items()
    ]
    metric.process({}, samples)
    mm = metric.compute_metrics(metric.results)
    for ours_prefix, mm_prefix in (("box", "bbox"), ("mask", "segm")):
        for ours_key, mm_key in (("ap", "mAP"), ("ap50", "mAP_50"), ("ap75", "mAP_75")):
            got = ours[f"{ours_prefix}_{ours_key}"]
            assert mm[f"{mm_prefix}_{mm_key}"] == pytest.approx(got, abs=5e-4 + 1e-9)
        assert 0.1 < ours[f"{ours_prefix}_ap"] < 0.95  # a non-trivial case


def _read_result(results_dir: Path) -> dict[str, Any]:
    files = list(results_dir.rglob("*.json"))
    assert len(files) == 1
    doc: dict[str, Any] = json.loads(files[0].read_text())
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("task", ["segmentation/upernet", "segmentation/semfpn"])
def test_segmentation_task_end_to_end(task: str, tmp_path: Path) -> None:
    overrides = dict(iterations=3, n_train=8, n_test=4, batch_size=2, head_channels=16)
    cfg = EvalConfig(
        tasks=task,
        checkpoint=SPEC,
        results_dir=tmp_path / "results",
        overrides=overrides,
        show_progress=False,
    )
    [(_, path)] = evaluate(cfg)
    assert path.is_file()
    doc = _read_result(tmp_path / "results")
    assert doc["task"] == task and doc["primary_metric"] == "miou"
    for name in ("miou", "macc", "aacc"):
        assert 0.0 <= doc["metrics"][name]["mean"] <= 1.0
    assert doc["config"]["iterations"] == 3


@pytest.mark.slow
def test_maskrcnn_mmdet_end_to_end(tmp_path: Path) -> None:
    overrides = dict(epochs=1, n_train=4, n_test=2, batch_size=2, image_size=64, neck_channels=16)
    cfg = EvalConfig(
        tasks="detection/maskrcnn_mmdet",
        checkpoint=SPEC,
        results_dir=tmp_path / "results",
        overrides=overrides,
        show_progress=False,
    )
    [(_, path)] = evaluate(cfg)
    assert path.is_file()
    doc = _read_result(tmp_path / "results")
    assert doc["primary_metric"] == "bbox_map"
    for name in ("bbox_map", "bbox_map_50", "segm_map", "segm_map_75"):
        assert 0.0 <= doc["metrics"][name]["mean"] <= 1.0


class _Interrupt(RuntimeError):
    pass


@HOOKS.register_module(force=True)
class EqbenchTestInterruptHook(Hook):
    """Raises after training iteration ``at`` (after the checkpoint hook saved it)."""

    priority = "LOWEST"

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if runner.iter + 1 == self.at:
            raise _Interrupt(f"interrupted after iteration {self.at}")


@HOOKS.register_module(force=True)
class EqbenchTestStartHook(Hook):
    """Records the iteration training starts from."""

    started_at: ClassVar[list[int]] = []

    def before_train(self, runner: Any) -> None:
        EqbenchTestStartHook.started_at.append(runner.iter)


@pytest.mark.slow
def test_resume_interrupted_run_with_weights_only(tmp_path: Path) -> None:
    register_backbone()
    register_hooks()
    cfg = SegmentationFinetuneConfig(
        iterations=4, n_train=4, n_test=2, batch_size=2, head_channels=8, checkpoint_interval=1
    )
    data = segmentation_data(DatasetSpec("shapes"), 4, 2, 64, 0, tmp_path / "data")
    work = tmp_path / "work"

    def runner(extra_hook: dict[str, Any]) -> Runner:
        mm = segmentation_config(cfg, SPEC, 64, data, work, seed=0)
        mm.custom_hooks = [*mm.custom_hooks, extra_hook]
        return Runner.from_cfg(mm)

    first = runner(dict(type="EqbenchTestInterruptHook", at=2))
    with pytest.raises(_Interrupt), mmengine_safe_globals():
        first.train()
    checkpoint = work / "iter_2.pth"
    assert checkpoint.is_file()
    # the check is on: without the scoped allow-list torch refuses mmengine's checkpoint
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint)
    EqbenchTestStartHook.started_at.clear()
    second = runner(dict(type="EqbenchTestStartHook"))
    with mmengine_safe_globals():
        second.train()
    assert EqbenchTestStartHook.started_at == [2]
    assert second.iter == 4
    metrics = second.test()
    assert 0.0 <= metrics["mIoU"] <= 100.0
    # and the allow-list is scoped: outside the block the check is back
    with pytest.raises(pickle.UnpicklingError):
        torch.load(work / "iter_4.pth")


def test_dataset_sources_are_registered_by_name(tmp_path: Path) -> None:
    """Every source is a registered eqbench dataset; an unknown one is refused with the list;
    a new source is one registration (no dispatch to edit)."""
    from eqbench.data import DATASETS
    from eqbench.errors import DatasetError
    from eqbench.openmmlab.data import COCO_SOURCES, SEGMENTATION_SOURCES, coco_data
    from eqbench.openmmlab.segmentation import SegmentationData

    assert set(SEGMENTATION_SOURCES.names()) == {"shapes", "ade20k"}
    assert set(COCO_SOURCES.names()) == {"shapes", "coco"}
    for name in (*SEGMENTATION_SOURCES.names(), *COCO_SOURCES.names()):
        assert name in DATASETS
    with pytest.raises(DatasetError, match="read ade20k, shapes, not 'voc"):
        segmentation_data(DatasetSpec("voc", "/x"), 4, 2, 64, 0, tmp_path)
    with pytest.raises(DatasetError, match="read coco, shapes"):
        coco_data(DatasetSpec("ade20k", "/x"), 4, 2, 64, 0, tmp_path)
    with pytest.raises(DatasetError, match="needs a path: --dataset ade20k:PATH"):
        segmentation_data(DatasetSpec("ade20k"), 4, 2, 64, 0, tmp_path)
    made = SegmentationData(tmp_path, ("a", "b"), 3, 1)
    SEGMENTATION_SOURCES.register("voc")(lambda *args: made)
    try:
        assert segmentation_data(DatasetSpec("voc", "/x"), 4, 2, 64, 0, tmp_path) is made
    finally:
        SEGMENTATION_SOURCES.remove("voc")
