"""Dense protocols: mmseg-style IoU metrics, the homography geometry, the heads, and
``eqbench eval`` of the dense tasks through to the leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from eqbench.cli import main
from eqbench.data import IGNORE_INDEX, load_dataset
from eqbench.protocols.homography.head import (
    PairParams,
    apply_homography,
    homography_dlt,
    make_pair_views,
    mean_corner_error,
    patch_corners,
    sample_pairs,
)
from eqbench.protocols.segmentation.head import (
    HeadTraining,
    confusion_matrix,
    evaluate_head,
    segmentation_scores,
    train_linear_head,
)
from eqbench.results.leaderboard import format_cell

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_scores(pred: np.ndarray, label: np.ndarray, k: int) -> dict[str, float]:
    """Written independently: loop over classes, skip ignored pixels."""
    keep = label != IGNORE_INDEX
    p, y = pred[keep], label[keep]
    ious, accs = [], []
    for c in range(k):
        inter = np.sum((p == c) & (y == c))
        union = np.sum((p == c) | (y == c))
        if union > 0:
            ious.append(inter / union)
        if np.sum(y == c) > 0:
            accs.append(inter / np.sum(y == c))
    return {
        "miou": float(np.mean(ious)),
        "macc": float(np.mean(accs)),
        "aacc": float(np.mean(p == y)),
    }


def test_scores_match_independent_computation() -> None:
    label = np.array([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1], [0, 4, 4, 2]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 3, 1], [0, 4, 3, 2]])
    # class 3: predicted (once on an ignored pixel, once on a scored one) but absent from labels:
    # IoU 0 counts; class 5: absent from both, left out. The ignored pixel is never scored.
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), num_classes=6)
    assert int(cm.sum()) == 11
    got = segmentation_scores(cm)
    ref = _reference_scores(pred, label, 6)
    for key in ("miou", "macc", "aacc"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12)
    assert got["n_classes_scored"] == 5
    assert got["aacc"] == pytest.approx(8 / 11)
    # by hand: IoU 0: 2/4, 1: 3/4, 2: 2/3, 3: 0/1, 4: 1/2
    assert got["miou"] == pytest.approx((0.5 + 0.75 + 2 / 3 + 0 + 0.5) / 5)


def test_perfect_predictor_scores_one() -> None:
    label = torch.randint(0, 4, (3, 16, 16))
    label[0, 0, :] = IGNORE_INDEX
    pred = label.clamp(max=3)
    scores = segmentation_scores(confusion_matrix(pred, label, num_classes=5))
    assert scores["miou"] == scores["macc"] == scores["aacc"] == 1.0


def test_linear_head_learns_informative_features() -> None:
    """Features that encode the (downsampled) mask: the head must beat the majority class."""
    ds = load_dataset("shapes", "train", n=40)
    te = load_dataset("shapes", "test", n=12)
    _, y_tr = ds.load_pair(range(40), 32)  # type: ignore[attr-defined]
    _, y_te = te.load_pair(range(12), 32)  # type: ignore[attr-defined]

    def feats(y: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(F.one_hot(y, 6).permute(0, 3, 1, 2).float(), 8)

    fit = train_linear_head(
        feats(y_tr), y_tr, 6, HeadTraining(iterations=150), seed=0, device=torch.device("cpu")
    )
    scores = evaluate_head(fit.head, feats(y_te), y_te, 6, torch.device("cpu"))
    majority = segmentation_scores(confusion_matrix(torch.zeros_like(y_te), y_te, 6))
    assert scores["miou"] > majority["miou"] + 0.3, (scores, majority)


def test_dlt_recovers_a_known_homography() -> None:
    h = torch.tensor(
        [[[1.1, 0.05, 3.0], [-0.02, 0.95, -2.0], [1e-3, -2e-3, 1.0]]], dtype=torch.float64
    )
    src = patch_corners(32)[None]
    dst = apply_homography(h, src)
    assert torch.allclose(homography_dlt(src, dst), h, atol=1e-10)


def test_zero_displacement_and_translation_warps() -> None:
    images = torch.rand(2, 3, 40, 40)
    params = PairParams(torch.tensor([[5.0, 7.0], [10.0, 3.0]], dtype=torch.float64),
                        torch.zeros(2, 4, 2, dtype=torch.float64))  # fmt: skip
    a, b = make_pair_views(images, params, 16)
    assert torch.allclose(a[0], images[0, :, 7:23, 5:21], atol=1e-5)
    assert torch.allclose(a, b, atol=1e-5)
    assert mean_corner_error(params.delta, params.delta) == 0.0
    # every corner moved by (+3, -2): B is the crop shifted 3 right and 2 up
    shift = torch.tensor([3.0, -2.0], dtype=torch.float64).expand(2, 4, 2).clone()
    _, b = make_pair_views(images, PairParams(params.top_left, shift), 16)
    assert torch.allclose(b[0], images[0, :, 5:21, 8:24], atol=1e-5)
    assert torch.allclose(b[1], images[1, :, 1:17, 13:29], atol=1e-5)
    assert mean_corner_error(torch.zeros_like(shift), shift) == pytest.approx(13**0.5)


def test_sampled_corners_stay_inside() -> None:
    p = sample_pairs(200, 64, 32, 8.0, torch.Generator().manual_seed(0))
    corners = patch_corners(32)[None] + p.top_left[:, None] + p.delta
    assert corners.min() >= 0 and corners.max() <= 63
    assert p.delta.abs().max() <= 8.0


def test_leaderboard_formats_dense_metrics() -> None:
    assert format_cell(0.4567, 0.0, "percent") == "45.7"
    assert format_cell(3.25, 0.0, "px") == "3.250"


def test_eval_dense_tasks_cli_to_leaderboard(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["eval", "--task", "dense", "--checkpoint", "baseline:random:micro_vit", "-q"]
    args += ["--results-dir", str(results), "--no-cache", "--set", "image_size=32"]
    args += ["--set", "n_train=16", "--set", "n_test=8", "--set", "iterations=5"]
    args += ["--set", "fpn_channels=16"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    files = sorted(results.rglob("*.json"))
    assert len(files) == 3
    records = {r["task"]: r for r in (json.loads(f.read_text()) for f in files)}
    seg, hom = records["segmentation/linear"], records["dense/homography"]
    det = records["detection/maskrcnn"]
    assert det["primary_metric"] == "box_ap" and 0 <= det["metrics"]["box_ap"]["mean"] <= 1
    assert seg["primary_metric"] == "miou" and seg["higher_is_better"] is True
    assert 0 <= seg["metrics"]["miou"]["mean"] <= 1 and seg["dataset"] == "shapes"
    assert hom["primary_metric"] == "mce" and hom["higher_is_better"] is False
    assert hom["metrics"]["mce"]["mean"] > 0 and hom["config"]["image_size"] == 32
    board = CliRunner().invoke(
        main, ["leaderboard", "--results-dir", str(results), "--format", "md"]
    )
    assert board.exit_code == 0
    assert "n_train=16} ↓ | detection/maskrcnn {" in board.output  # homography: lower is better
    miou = 100 * seg["metrics"]["miou"]["mean"]
    assert f"{miou:.1f}" in board.output


@pytest.mark.parametrize(
    ("spec", "margin"), [("baseline:random:micro_vit", 0.03), ("baseline:pixels", 0.08)]
)
def test_linear_probe_on_shapes_beats_majority(spec: str, margin: float) -> None:
    """Shapes are bright solid fills on dim photo textures, so even a random ViT's or raw pixels'
    patch tokens separate them from the background (version 1 of the scenes did not)."""
    from eqbench.data.base import DatasetSpec
    from eqbench.features.store import FeatureStore
    from eqbench.models import load_model
    from eqbench.protocols import PROTOCOLS, EvalContext
    from eqbench.protocols.segmentation import SegmentationLinearConfig

    model = load_model(spec, img_size=64)
    store = FeatureStore(
        model.encoder, model.sha256, torch.device("cpu"), None, show_progress=False
    )
    ctx = EvalContext(model, store, DatasetSpec.parse("shapes"), seed=0)
    cfg = SegmentationLinearConfig(image_size=64, n_train=32, n_test=8, iterations=60)
    out = PROTOCOLS.get("segmentation_linear")().run(cfg, ctx)
    assert out["miou"][0] > out["miou_majority"][0] + margin, out
