"""``depth/linear``: the depth errors, masks and losses against hand computations, dinov2's
linear head, the built-in scenes' geometry, the NYU and KITTI layouts from fixtures, the task
through the CLI, bad input, the Table 6 columns, and learning beating the mean depth.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_refused_in_one_line, eval_one_result, run_cli
from PIL import Image
from protocol_helpers import memory_store, pixel_context

from eqbench.backbones.pixels import PixelEncoder
from eqbench.data import load_dataset
from eqbench.data.base import DatasetSpec
from eqbench.data.depth import DepthDataset
from eqbench.data.scenes import IMAGE_SIZE, camera_rays
from eqbench.errors import ConfigError
from eqbench.models import load_model
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.depth import DepthLinearConfig
from eqbench.protocols.depth.head import DepthTraining, LinearDepthHead, learning_rate
from eqbench.protocols.depth.metrics import (
    DepthScores,
    crop_mask,
    depth_errors,
    eval_mask,
    gradient_loss,
    sig_loss,
)
from eqbench.tables.papers import build, mapping_lines, table_spec

# --- errors, masks, losses --------------------------------------------------------------------


def test_depth_errors_by_hand() -> None:
    gt = np.array([1.0, 2.0, 4.0, 8.0])
    pred = np.array([1.1, 2.0, 3.0, 10.0])
    out = depth_errors(gt, pred)
    # squared errors 0.01, 0, 1, 4
    assert out["rmse"] == pytest.approx(math.sqrt(5.01 / 4))
    # relative errors 0.1, 0, 0.25, 0.25
    assert out["abs_rel"] == pytest.approx(0.15)
    logs = [math.log10(1.1), 0.0, math.log10(4 / 3), math.log10(10 / 8)]
    assert out["log10"] == pytest.approx(sum(logs) / 4)
    # max ratios 1.1, 1, 4/3, 1.25: 1.25 is not < 1.25; all are < 1.5625
    assert out["delta1"] == pytest.approx(0.5)
    assert out["delta2"] == pytest.approx(1.0)
    assert out["delta3"] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in depth_errors(np.array([]), np.array([])).values())


def test_eigen_and_garg_crops() -> None:
    eigen = crop_mask((480, 640), "eigen")
    assert eigen.sum() == (471 - 45) * (601 - 41)
    assert eigen[45, 41] and eigen[470, 600] and not eigen[44, 41] and not eigen[45, 601]
    garg = crop_mask((352, 1216), "garg")
    rows, cols = np.flatnonzero(garg.any(axis=1)), np.flatnonzero(garg.any(axis=0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (143, 349, 43, 1172)
    assert crop_mask((3, 4), "none").all()


def test_eval_mask_keeps_depth_strictly_inside_the_range() -> None:
    gt = np.array([[0.0, 0.001, 0.5], [9.99, 10.0, 12.0]])
    expected = np.array([[False, False, True], [True, False, False]])
    np.testing.assert_array_equal(eval_mask(gt, 1e-3, 10.0, "none"), expected)


def test_scores_are_means_over_images_and_skip_empty_ones() -> None:
    scores = DepthScores(1e-3, 10.0, "none")
    scores.add(np.full((2, 2), 2.0), np.full((2, 2), 3.0))  # RMSE 1, AbsRel 0.5
    scores.add(np.array([[1.0, 1.0], [1.0, 0.0]]), np.full((2, 2), 1.0))  # exact: 0, 0
    scores.add(np.zeros((2, 2)), np.ones((2, 2)))  # no ground truth: left out
    out = scores.summary()
    assert out["rmse"] == pytest.approx(0.5) and out["abs_rel"] == pytest.approx(0.25)
    assert out["delta1"] == pytest.approx(0.5)  # ratio 1.5 fails, exact passes


def test_sig_loss_by_hand() -> None:
    gt = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]])
    pred = torch.tensor([[[2.0, 3.0], [2.0, 5.0]]])
    valid = gt > 0
    eps = 1e-3
    g = np.log(np.array([2.0, 3.0, 2.0]) + eps) - np.log(np.array([1.0, 2.0, 4.0]) + eps)
    full = math.sqrt(np.var(g, ddof=1) + 0.15 * g.mean() ** 2)
    assert float(sig_loss(pred, gt, valid)) == pytest.approx(full, rel=1e-6)
    warm = math.sqrt(0.15 * g.mean() ** 2)
    assert float(sig_loss(pred, gt, valid, warm_up=True)) == pytest.approx(warm, rel=1e-5)


def test_gradient_loss_by_hand() -> None:
    """One pixel off by a factor of e on a 5x5 map of ones: at stride 1 it differs from its
    neighbours two rows below and two columns right (|δ| each, over 25 valid pixels); strides
    2, 4 and 6 do not sample pixel (1, 1)."""
    gt = torch.ones(1, 5, 5)
    pred = gt.clone()
    pred[0, 1, 1] = math.e
    delta = math.log(math.e + 1e-3) - math.log(1 + 1e-3)
    loss = gradient_loss(pred, gt, gt > 0)
    assert float(loss) == pytest.approx(2 * delta / 25, rel=1e-6)
    assert float(gradient_loss(gt, gt, gt > 0)) == 0.0


def test_learning_rate_warms_up_linearly_then_decays() -> None:
    cfg = DepthTraining(iterations=300, lr=1.0)
    assert learning_rate(0, cfg) == pytest.approx(1e-3)
    assert learning_rate(50, cfg) < learning_rate(99, cfg) < learning_rate(100, cfg)
    assert learning_rate(100, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))
    assert learning_rate(299, cfg) < 1e-3


# --- the head ---------------------------------------------------------------------------------


def test_equal_logits_predict_the_mean_bin_and_one_hot_its_bin() -> None:
    head = LinearDepthHead(3, min_depth=1e-3, max_depth=10.0, n_bins=256)
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.bias.fill_(2.0)
    out = head(torch.randn(2, 3, 2, 3))
    assert out.shape == (2, 8, 12)
    torch.testing.assert_close(out, torch.full_like(out, (1e-3 + 10.0) / 2))
    with torch.no_grad():
        head.conv.bias.fill_(-1.0)  # ReLU gives 0 + 0.1 everywhere but bin 40
        head.conv.bias[40] = 1e6
    bins = torch.linspace(1e-3, 10.0, 256)
    expected = (bins[40] * 1e6 + 0.1 * bins.sum()) / (1e6 + 0.1 * 256)
    torch.testing.assert_close(head(torch.zeros(1, 3, 1, 1)), expected.expand(1, 4, 4))


def test_head_equals_dinov2_order_upsample_then_convolve() -> None:
    torch.manual_seed(0)
    head = LinearDepthHead(8, min_depth=1e-3, max_depth=10.0)
    feats = torch.randn(2, 8, 3, 5)
    up = F.interpolate(feats, size=(12, 20), mode="bilinear", align_corners=False)
    prob = torch.relu(head.conv(up)) + 0.1
    prob = prob / prob.sum(dim=1, keepdim=True)
    reference = torch.einsum("ikmn,k->imn", prob, torch.linspace(1e-3, 10.0, 256))
    torch.testing.assert_close(head(feats), reference, rtol=1e-5, atol=1e-5)


# --- the built-in scenes ----------------------------------------------------------------------


def test_camera_rays_have_unit_depth_along_the_optical_axis() -> None:
    dirs, axis = camera_rays(6, 8, 60.0, math.radians(10), math.radians(-5))
    np.testing.assert_allclose(dirs @ axis, 1.0, rtol=1e-12)
    level, _ = camera_rays(6, 8, 60.0, 0.0, 0.0)
    focal = 0.5 * 8 / math.tan(math.radians(30))
    np.testing.assert_allclose(level[0], [(0.5 - 4) / focal, (0.5 - 3) / focal, 1.0])


def test_scenes_are_seeded_exact_and_in_range() -> None:
    ds = load_dataset("depth_scenes", "train", n=3, seed=0)
    assert isinstance(ds, DepthDataset) and len(ds) == 3
    image, depth = ds.sample(1)
    assert image.shape == (*IMAGE_SIZE, 3) and depth.shape == IMAGE_SIZE
    again = load_dataset("depth_scenes", "train", n=5, seed=0).sample(1)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(depth, again[1])
    other = load_dataset("depth_scenes", "test", n=3, seed=0).sample(1)[1]
    assert not np.array_equal(depth, other)
    assert depth.min() > 0.5 and depth.max() < 10.0


# --- the NYU and KITTI layouts ----------------------------------------------------------------


def write_depth_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def write_rgb(path: Path, shape: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def write_nyu(
    root: Path, n_train: int = 4, n_test: int = 2, shape: tuple[int, int] = (48, 64)
) -> None:
    """BTS's layout: '/<scene>/rgb_XXXXX.jpg /<scene>/sync_depth_XXXXX.png 518.8579' lines."""
    for split, count in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(count):
            scene = f"{split}_scene_{i % 2:04d}"
            write_rgb(root / scene / f"rgb_{i:05d}.jpg", shape, i)
            mm = 500 + 1000 * np.arange(shape[0] * shape[1]).reshape(shape) % 9000
            write_depth_png(root / scene / f"sync_depth_{i:05d}.png", mm)
            lines.append(f"/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png 518.8579")
        lines.append("/missing/rgb_99999.jpg None 518.8579")  # skipped, as the toolbox does
        (root / f"nyu_{split}.txt").write_text("\n".join(lines) + "\n")


def test_nyu_layout_loads_from_a_fixture(tmp_path: Path) -> None:
    write_nyu(tmp_path)
    train = load_dataset(f"nyu:{tmp_path}", "train")
    test = load_dataset(f"nyu:{tmp_path}", "test")
    assert isinstance(train, DepthDataset) and len(train) == 4 and len(test) == 2
    assert (train.crop, train.max_depth) == ("eigen", 10.0)
    image, depth = train.sample(0)
    assert image.shape == (48, 64, 3) and depth.dtype == np.float32
    assert depth[0, 0] == pytest.approx(0.5) and depth[0, 1] == pytest.approx(1.5)
    assert load_dataset(f"nyu:{tmp_path}", "train", n=2, seed=1).fingerprint()["n"] == 2


def test_kitti_layout_loads_with_the_kb_crop(tmp_path: Path) -> None:
    rgb = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    gt = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    write_rgb(tmp_path / "input" / rgb, (356, 1220), 0)
    values = np.zeros((356, 1220))
    values[-1, 2] = 256 * 20  # bottom row, third column: kept by the KB crop (left margin 2)
    values[0, 600] = 256 * 5  # top rows: cut
    write_depth_png(tmp_path / "gt_depth" / gt, values)
    for split in ("train", "test"):
        (tmp_path / f"kitti_eigen_{split}.txt").write_text(f"{rgb} {gt} 721.5377\n")
    ds = load_dataset(f"kitti:{tmp_path}", "test")
    assert (ds.crop, ds.max_depth) == ("garg", 80.0)
    image, depth = ds.sample(0)
    assert image.shape == (352, 1216, 3) and depth.shape == (352, 1216)
    assert depth[-1, 0] == pytest.approx(20.0) and depth.sum() == pytest.approx(20.0)


def test_nyu_fixture_through_the_protocol(tmp_path: Path) -> None:
    write_nyu(tmp_path)
    ctx = pixel_context(f"nyu:{tmp_path}")
    cfg = DepthLinearConfig(image_size=32, n_train=None, n_test=None, iterations=5, batch_size=2)
    out = PROTOCOLS.get("depth_linear")().run(cfg, ctx)
    assert set(out) == set(PROTOCOLS.get("depth_linear").metrics)
    assert all(math.isfinite(v[0]) for v in out.values())
    assert out["rmse_margin"][0] == pytest.approx(out["rmse_mean_depth"][0] - out["rmse"][0])
    assert 0.0 <= out["delta1"][0] <= 1.0


def test_intermediate_layers_with_cls_on_a_vit() -> None:
    model = load_model("baseline:random:micro_vit", img_size=32)
    images = torch.rand(2, 3, 32, 32)
    feats = model.encoder.forward_layers(images, 2)  # micro_vit has 2 blocks
    assert len(feats) == 2 and all(f.cls is not None for f in feats)
    assert not torch.allclose(feats[0].patch, feats[1].patch)
    last = model.encoder(images)  # the last block after the final norm is forward()'s output
    torch.testing.assert_close(feats[1].patch, last.patch, rtol=1e-4, atol=1e-4)
    assert last.cls is not None and feats[1].cls is not None
    torch.testing.assert_close(feats[1].cls, last.cls, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="has 2 blocks"):
        model.encoder.forward_layers(images, 4)
    with pytest.raises(ConfigError, match="Use layers=1"):
        PixelEncoder(img_size=32, grid=4).forward_layers(images, 4)


# --- the task, the CLI, bad input, the table ----------------------------------------------------


def test_cli_eval_writes_a_result(tmp_path: Path) -> None:
    record = eval_one_result(
        "depth/linear", "baseline:pixels", tmp_path / "results",
        "--set", "n_train=8", "--set", "n_test=4", "--set", "iterations=5",
        "--set", "image_size=32",
    )  # fmt: skip
    assert record["primary_metric"] == "rmse"
    assert record["dataset"] == "depth_scenes"
    assert 0.0 < record["metrics"]["rmse"]["mean"] < 10.0
    assert "rmse_mean_depth" in record["metrics"] and "rmse_margin" in record["metrics"]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("empty_list", "the split is empty"),
        ("no_list", "Missing split file"),
        ("missing_file", "which does not exist"),
        ("mismatched", "Replace the pair"),
    ],
)
def test_bad_nyu_input_is_one_line_and_writes_nothing(
    tmp_path: Path, layout: str, message: str
) -> None:
    root = tmp_path / "nyu"
    if layout != "missing":
        write_nyu(root)
    if layout == "empty_list":
        (root / "nyu_test.txt").write_text("\n/x/rgb.jpg None 518.8579\n")
    if layout == "no_list":
        (root / "nyu_test.txt").unlink()
    if layout == "missing_file":
        next(root.glob("test_scene_0000/sync_depth_*.png")).unlink()
    if layout == "mismatched":
        for png in root.glob("train_scene_*/sync_depth_*.png"):
            write_depth_png(png, np.full((10, 10), 1000))
    assert_refused_in_one_line(
        message, "depth/linear", "baseline:pixels", tmp_path / "results",
        "--dataset", f"nyu:{root}", "--set", "iterations=2", "--set", "image_size=32",
    )  # fmt: skip


def test_dataset_without_depth_is_refused() -> None:
    code, out = run_cli(
        "eval", "--task", "depth/linear", "--checkpoint", "baseline:pixels",
        "--dataset", "shapes", "--results-dir", "unused", "--quiet",
    )  # fmt: skip
    assert code != 0 and "has no depth maps" in out and "nyu:PATH" in out


def test_table6_depth_columns_name_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = {line.split(":")[0]: line for line in mapping_lines(table_spec("wang2026", "6"))}
    assert lines["nyu_rmse"].startswith("nyu_rmse: depth/linear on nyu")
    assert lines["nyu_absrel"].startswith("nyu_absrel: depth/linear on nyu [abs_rel]")
    assert lines["kitti_rmse"].startswith("kitti_rmse: depth/linear on kitti")
    assert lines["kitti_absrel"].startswith("kitti_absrel: depth/linear on kitti [abs_rel]")
    records = [
        {
            "task": "depth/linear",
            "model_id": "m",
            "dataset": dataset,
            "primary_metric": "rmse",
            "created_at": "2026-01-01T00:00:00",
            "metrics": {"rmse": {"mean": rmse}, "abs_rel": {"mean": absrel}},
        }
        for dataset, rmse, absrel in (
            ("nyu:/data/nyu", 0.35, 0.1),
            ("kitti:/data/kitti", 2.7, 0.07),
        )
    ]
    import eqbench.tables.papers as papers

    monkeypatch.setattr(papers, "load_results", lambda _: records)
    tmp_path.joinpath("results").mkdir()
    _, _, rows = build("wang2026", "6", tmp_path / "results")
    row = dict(zip(rows[0], rows[-1], strict=True))
    assert row["nyu_rmse"] == "0.350" and row["nyu_absrel"] == "0.100"
    assert row["kitti_rmse"] == "2.700" and row["kitti_absrel"] == "0.070"


# --- learning is real -------------------------------------------------------------------------


@pytest.mark.slow
def test_trained_head_beats_the_mean_depth_on_the_built_in_scenes() -> None:
    """The default task with a random ViT-Ti/16: the linear head against predicting the training
    split's mean depth (measured: RMSE 1.377 against 1.670 m, AbsRel 0.300 against 0.395)."""
    model = load_model("baseline:random:vit_tiny_patch16_224", img_size=224)
    ctx = EvalContext(model, memory_store(model.encoder), DatasetSpec.parse("depth_scenes"), seed=0)
    out = PROTOCOLS.get("depth_linear")().run(DepthLinearConfig(), ctx)
    assert out["rmse"][0] < out["rmse_mean_depth"][0] - 0.15, out
    assert out["abs_rel"][0] < out["abs_rel_mean_depth"][0], out
    assert out["delta1"][0] > out["delta1_mean_depth"][0], out
