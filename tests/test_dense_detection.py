"""Detection: the ViT simple feature pyramid, COCO AP through the torchvision path against
pycocotools run directly, and ``eqbench eval --task detection/maskrcnn`` to the leaderboard."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eqbench.backbones import create_encoder
from eqbench.cli import main
from eqbench.data import load_dataset
from eqbench.data.shapes import CLASSES, ShapeScenes
from eqbench.protocols.detection.maskrcnn import (
    PyramidBackbone,
    build_maskrcnn,
    coco_ap,
    coco_ground_truth,
    coco_results,
)

SIZE = 48


pytestmark = pytest.mark.usefixtures("one_thread")


def _ground_truth(n: int = 6) -> tuple[list, dict]:
    ds = load_dataset("shapes", "test", n=n)
    assert isinstance(ds, ShapeScenes)
    instances = [ds.instances(i, SIZE) for i in range(n)]
    return instances, coco_ground_truth(instances, (SIZE, SIZE), CLASSES)


def _outputs(instances: list, perfect: bool) -> list[dict[str, torch.Tensor]]:
    """torchvision-style detections: jittered boxes and masks, wrong labels, false positives."""
    gen = torch.Generator().manual_seed(0)
    outputs = []
    for objects in instances:
        boxes, labels, scores, masks = [], [], [], []
        for inst in objects:
            x, y, w, h = inst.box
            box = torch.tensor([x, y, x + w, y + h])
            mask = torch.from_numpy(inst.mask).float()
            label = inst.category
            if not perfect:
                box = box + torch.randn(4, generator=gen) * 2
                mask = mask.roll(int(torch.randint(-2, 3, (1,), generator=gen)), dims=1) * 0.9
                if torch.rand(1, generator=gen) < 0.25:
                    label = label % (len(CLASSES) - 1) + 1
            boxes.append(box)
            labels.append(label)
            scores.append(float(torch.rand(1, generator=gen)) if not perfect else 1.0)
            masks.append(mask)
        if not perfect:  # a false positive per image
            boxes.append(torch.tensor([1.0, 2.0, 20.0, 30.0]))
            labels.append(1)
            scores.append(0.7)
            fp = torch.zeros(SIZE, SIZE)
            fp[2:30, 1:20] = 0.8
            masks.append(fp)
        outputs.append(
            {
                "boxes": torch.stack(boxes),
                "labels": torch.tensor(labels),
                "scores": torch.tensor(scores),
                "masks": torch.stack(masks)[:, None],
            }
        )
    return outputs


def _cocoeval_directly(gt: dict, outputs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """pycocotools by hand, written separately from eqbench's conversion."""
    results = []
    for image_id, out in enumerate(outputs, start=1):
        for box, label, score, mask in zip(
            out["boxes"].tolist(),
            out["labels"].tolist(),
            out["scores"].tolist(),
            out["masks"],
            strict=True,
        ):
            rle = mask_utils.encode(np.asfortranarray((mask[0] > 0.5).numpy().astype(np.uint8)))
            results.append(
                {
                    "image_id": image_id,
                    "category_id": label,
                    "score": score,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "segmentation": rle,
                }
            )
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        dets = coco.loadRes(results)
        for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
            ev = COCOeval(coco, dets, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out.update({f"{prefix}_ap": ev.stats[0], f"{prefix}_ap50": ev.stats[1]})
            out[f"{prefix}_ap75"] = ev.stats[2]
    return out


def test_coco_ap_matches_cocoeval_run_directly() -> None:
    instances, gt = _ground_truth()
    outputs = _outputs(instances, perfect=False)
    got = coco_ap(gt, coco_results(outputs, range(1, len(outputs) + 1)))
    ref = _cocoeval_directly(gt, outputs)
    assert set(got) == set(ref)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert 0.05 < got["box_ap"] < 0.95 and 0.05 < got["mask_ap"] < 0.95  # a non-trivial case


def test_perfect_predictor_scores_ap_one() -> None:
    instances, gt = _ground_truth()
    outputs = _outputs(instances, perfect=True)
    got = coco_ap(gt, coco_results(outputs, range(1, len(outputs) + 1)))
    assert all(v == pytest.approx(1.0) for v in got.values()), got
    assert coco_ap(gt, [])["box_ap"] == 0.0


def test_simple_feature_pyramid_strides_and_freezing() -> None:
    encoder = create_encoder("micro_vit", img_size=64)
    pyramid = PyramidBackbone(encoder, out_channels=16, frozen=True)
    maps = pyramid(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps.values()] == [(2, 16, s, s) for s in (16, 8, 4, 2)]
    assert not any(p.requires_grad for p in encoder.parameters())
    pyramid.train()
    assert not encoder.training and pyramid.pyramid.training
    # raw pixels (a 16x16 grid at any size) are resampled to stride 16 first
    pixels = PyramidBackbone(create_encoder("pixels", img_size=64), out_channels=8)
    assert pixels(torch.rand(1, 3, 64, 64))["3"].shape == (1, 8, 2, 2)


def test_finetuned_maskrcnn_step_updates_backbone() -> None:
    model = build_maskrcnn(
        create_encoder("micro_vit", img_size=32), 3, 32, frozen=False, out_channels=16
    )
    before = model.backbone.encoder.model.patch_embed.proj.weight.clone()
    target = {
        "boxes": torch.tensor([[4.0, 4.0, 20.0, 24.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.zeros(1, 32, 32, dtype=torch.uint8),
    }
    target["masks"][0, 4:24, 4:20] = 1
    losses = model([torch.rand(3, 32, 32)], [target])
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"} <= set(losses)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sum(losses.values()).backward()  # type: ignore[union-attr]
    opt.step()
    assert not torch.equal(before, model.backbone.encoder.model.patch_embed.proj.weight)


def test_eval_maskrcnn_cli_to_leaderboard(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["eval", "--task", "detection/maskrcnn", "--checkpoint", "baseline:random:micro_vit"]
    args += ["-q", "--results-dir", str(results), "--no-cache"]
    for option in ("image_size=32", "n_train=4", "n_test=2", "iterations=2", "fpn_channels=16"):
        args += ["--set", option]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (path,) = results.rglob("*.json")
    record = json.loads(path.read_text())
    assert record["task"] == "detection/maskrcnn" and record["primary_metric"] == "box_ap"
    assert record["dataset"] == "shapes" and record["config"]["frozen"] is False
    for name in ("box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50", "mask_ap75"):
        assert 0.0 <= record["metrics"][name]["mean"] <= 1.0
    board = CliRunner().invoke(
        main, ["leaderboard", "--results-dir", str(results), "--format", "md"]
    )
    assert board.exit_code == 0
    assert "detection/maskrcnn" in board.output and "baseline:random:micro_vit" in board.output
    assert f"{100 * record['metrics']['box_ap']['mean']:.1f}" in board.output
