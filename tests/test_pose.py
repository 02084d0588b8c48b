"""``pose/mpii``: PCKh against a hand computation, the heatmap codec, ViTPose's decoders, the
person crop, the built-in figures, mmpose's MPII layout from a fixture, the task through the CLI,
bad input and the Table 6 column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_refused_in_one_line, eval_one_result, run_cli
from PIL import Image
from protocol_helpers import pixel_context
from scipy.io import savemat

from eqbench.data import load_dataset
from eqbench.data.figures import CANVAS
from eqbench.data.pose import NUM_JOINTS, PoseDataset, PoseSample, crop_person, head_size
from eqbench.protocols import PROTOCOLS
from eqbench.protocols.pose import PoseConfig
from eqbench.protocols.pose.head import PoseHead, PoseTraining, keypoint_mse_loss, learning_rate
from eqbench.protocols.pose.metrics import PCKhScores, decode_heatmaps, encode_heatmaps
from eqbench.tables.papers import build, mapping_lines, table_spec

# --- PCKh ---------------------------------------------------------------------------------------


def test_head_size_is_the_head_box_diagonal_times_0_6() -> None:
    assert head_size([0, 0, 30, 40]) == pytest.approx(30.0)  # diagonal 50
    assert head_size([10, 20, 16, 28]) == pytest.approx(6.0)  # diagonal 10


def test_pckh_by_hand() -> None:
    """Two people, head sizes 30 and 6 px (so 15 and 3 px at 0.5, 3 and 0.6 px at 0.1).

    A: right ankle off by (9, 12) = 15 px (correct: MPII counts <=), right knee off by 15.1 px
    (wrong), pelvis 100 px off (wrong but not in the total), right wrist invisible and 100 px
    off (not counted). B: right ankle off by 3 px (correct), right hip off by 4 px (wrong),
    head top off by 3.5 px (wrong), left ankle invisible. Joints scored in the total: 13 + 13
    (pelvis and thorax left out), wrong at 0.5: 3; at 0.1: A's ankle and knee, B's ankle, hip
    and head top, 5.
    """
    gt = np.full((NUM_JOINTS, 2), 100.0)
    scores = PCKhScores()
    pred_a, vis_a = gt.copy(), np.ones(NUM_JOINTS, dtype=bool)
    pred_a[0] += (9.0, 12.0)
    pred_a[1] += (15.1, 0.0)
    pred_a[6] += (100.0, 0.0)
    pred_a[10] += (0.0, 100.0)
    vis_a[10] = False
    scores.add(pred_a, gt, vis_a, head_size([0, 0, 30, 40]))
    pred_b, vis_b = gt.copy(), np.ones(NUM_JOINTS, dtype=bool)
    pred_b[0] += (3.0, 0.0)
    pred_b[2] += (0.0, -4.0)
    pred_b[9] += (3.5, 0.0)
    pred_b[5] += (50.0, 50.0)
    vis_b[5] = False
    scores.add(pred_b, gt, vis_b, 6.0)
    out = scores.summary()
    assert out["pckh"] == pytest.approx(23 / 26)
    assert out["pckh_01"] == pytest.approx(21 / 26)
    assert out["pckh_head"] == pytest.approx(0.5)  # A right, B wrong
    assert out["pckh_ankle"] == pytest.approx(1.0)  # right 2/2, left 1/1 (B's is invisible)
    assert out["pckh_knee"] == pytest.approx(0.5 * (1.0 + 0.5))  # left 2/2, right 1/2
    assert out["pckh_hip"] == pytest.approx(0.5 * (1.0 + 0.5))
    assert out["pckh_wrist"] == pytest.approx(1.0)  # A's invisible right wrist is not counted
    rate, count = scores.per_joint()
    assert count[10] == 1 and count[5] == 1 and count[6] == 2 and rate[6] == 0.5
    with pytest.raises(ValueError, match="head size"):
        scores.add(gt, gt, vis_a, 0.0)


def test_pckh_of_joints_never_visible_is_nan_not_zero() -> None:
    scores = PCKhScores()
    visible = np.zeros(NUM_JOINTS, dtype=bool)
    visible[9] = True
    scores.add(np.zeros((NUM_JOINTS, 2)), np.zeros((NUM_JOINTS, 2)), visible, 1.0)
    out = scores.summary()
    assert out["pckh"] == 1.0 and out["pckh_head"] == 1.0 and math.isnan(out["pckh_wrist"])


# --- heatmaps, decoders, training ----------------------------------------------------------------


def test_heatmap_encode_decode_round_trip() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(2, 126, size=(NUM_JOINTS, 2))
    visible = np.ones(NUM_JOINTS, dtype=bool)
    visible[3] = False
    maps, weights = encode_heatmaps(points, visible, (32, 32), (128, 128), sigma=2.0)
    assert maps.shape == (NUM_JOINTS, 32, 32) and maps.dtype == np.float32
    assert weights[3] == 0 and not maps[3].any() and weights.sum() == NUM_JOINTS - 1
    assert maps.max() == pytest.approx(1.0)
    decoded = decode_heatmaps(maps[None], (128, 128))[0]
    # the peak sits on the nearest cell (4 px): within half a cell on each axis
    err = np.abs(decoded - points)[visible]
    assert err.max() <= 2.0 + 1e-5


def test_decoding_moves_a_quarter_cell_towards_the_higher_neighbour() -> None:
    maps = np.zeros((1, 2, 8, 8), dtype=np.float32)
    maps[0, 0, 4, 3] = 1.0
    maps[0, 0, 4, 4] = 0.5  # right neighbour higher than the left one: x + 0.25
    maps[0, 0, 3, 3] = 0.2  # upper neighbour higher: y - 0.25
    maps[0, 1] = -1.0  # no positive response: mmpose's (-1, -1) cell
    out = decode_heatmaps(maps, (32, 32))  # 4 px per cell
    np.testing.assert_allclose(out[0, 0], [(3 + 0.25) * 4, (4 - 0.25) * 4])
    np.testing.assert_allclose(out[0, 1], [-4.0, -4.0])


def test_keypoints_off_the_map_get_zero_weight() -> None:
    points = np.array([[-40.0, 10.0], [10.0, 200.0]])  # 3σ windows end left of / below the map
    maps, weights = encode_heatmaps(points, np.ones(2), (16, 16), (64, 64), sigma=2.0)
    assert weights.tolist() == [0.0, 0.0] and not maps.any()


def test_mse_loss_with_target_weights_by_hand() -> None:
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    target[0, 1] = 3.0
    weights = torch.tensor([[1.0, 0.0]])  # the second joint is invisible
    # cells: 4 with error 1 (weight 1), 4 with error 9 (weight 0); mean over all 8
    assert float(keypoint_mse_loss(pred, target, weights)) == pytest.approx(0.5)


@pytest.mark.parametrize("decoder", ["simple", "classic"])
def test_decoders_give_maps_four_times_the_token_grid(decoder: str) -> None:
    head = PoseHead(24, NUM_JOINTS, decoder, deconv_filters=8)
    out = head(torch.randn(2, 24, 3, 5))
    assert out.shape == (2, NUM_JOINTS, 12, 20)
    assert float(head.final.weight.detach().std()) < 0.01  # ViTPose's init: normal std 0.001
    if decoder == "classic":
        deconvs = [m for m in head.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
        assert [(m.kernel_size, m.stride, m.bias) for m in deconvs] == [((4, 4), (2, 2), None)] * 2


def test_simple_decoder_is_relu_bilinear_then_3x3_conv() -> None:
    head = PoseHead(4, 2, "simple")
    x = torch.randn(1, 4, 3, 3)
    up = torch.nn.functional.interpolate(x.relu(), scale_factor=4, mode="bilinear")
    torch.testing.assert_close(head(x), head.final(up))


def test_learning_rate_warms_up_then_steps_down() -> None:
    cfg = PoseTraining(iterations=210, lr=1.0, warmup_fraction=0.1)
    assert learning_rate(0, cfg) == pytest.approx(1e-3)
    assert learning_rate(10, cfg) < learning_rate(20, cfg) == pytest.approx(0.9524, rel=1e-3)
    assert learning_rate(21, cfg) == 1.0 and learning_rate(169, cfg) == 1.0
    assert learning_rate(170, cfg) == pytest.approx(0.1)
    assert learning_rate(200, cfg) == pytest.approx(0.01)


# --- the crop and the built-in figures ---------------------------------------------------------


def _sample(image: np.ndarray, center: tuple[float, float], side: float) -> PoseSample:
    joints = np.zeros((NUM_JOINTS, 2), dtype=np.float32)
    return PoseSample(
        image, joints, np.ones(NUM_JOINTS, bool), np.array(center, np.float32), side / 250.0, 1.0
    )


def test_crop_maps_image_pixels_to_crop_pixels() -> None:
    """A red 16 x 16 block at x 96-111, y 48-63 of a 200 px image; the 160 px box around
    (100, 100) shrunk to 40 px (zoom 1/4, through PIL's reduce by 2) puts it at x 19-22,
    y 7-10, where ``to_crop`` says."""
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    image[48:64, 96:112, 0] = 255
    crop = crop_person(_sample(image, (100.0, 100.0), 160.0), 40)
    assert crop.image.shape == (40, 40, 3) and crop.zoom == pytest.approx(0.25)
    red = crop.image[..., 0] > 127
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (7, 10, 19, 22)
    np.testing.assert_allclose(crop.to_crop(np.array([103.5, 55.5])), [20.875, 8.875])
    np.testing.assert_allclose(crop.to_image(crop.to_crop(np.array([3.0, 7.0]))), [3.0, 7.0])


def test_crop_at_zoom_one_is_a_shifted_copy_with_black_outside() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    crop = crop_person(_sample(image, (10.0, 12.0), 32.0), 32)  # box x -6..25, y -4..27
    np.testing.assert_array_equal(crop.image[4:, 6:], image[0:28, 0:26])
    assert not crop.image[:4].any() and not crop.image[:, :6].any()


def test_figures_are_seeded_exact_and_in_the_canvas() -> None:
    ds = load_dataset("stick_figures", "train", n=3, seed=0)
    assert isinstance(ds, PoseDataset) and len(ds) == 3
    s = ds.sample(1)
    assert s.image.shape == (CANVAS, CANVAS, 3) and s.joints.shape == (NUM_JOINTS, 2)
    again = load_dataset("stick_figures", "train", n=7, seed=0).sample(1)
    np.testing.assert_array_equal(s.image, again.image)
    np.testing.assert_array_equal(s.joints, again.joints)
    other = load_dataset("stick_figures", "test", n=3, seed=0).sample(1)
    assert not np.array_equal(s.joints, other.joints)
    assert (s.joints >= 0).all() and (s.joints <= CANVAS - 1).all()
    head = float(np.linalg.norm(s.joints[9] - s.joints[8]))  # the head box is its square
    assert s.head_size == pytest.approx(0.6 * math.sqrt(2) * head, rel=1e-5)
    span = (s.joints.max(axis=0) - s.joints.min(axis=0)).max()
    assert s.scale * 200 == pytest.approx(span, rel=1e-5)
    samples = [load_dataset("stick_figures", "train", n=30, seed=0).sample(i) for i in range(30)]
    assert any(not x.visible.all() for x in samples)  # some joints are occluded


# --- mmpose's MPII layout -----------------------------------------------------------------------


def _person(joint: tuple[float, float], center: tuple[float, float], scale: float) -> dict:
    """An mmpose MPII entry (1-based pixels); every joint at ``joint``, the left wrist
    invisible at (-1, -1) as in the annotation files."""
    joints = [list(joint)] * NUM_JOINTS
    joints[15] = [-1.0, -1.0]
    vis = [1] * NUM_JOINTS
    vis[15] = 0
    return {
        "image": "",
        "joints": joints,
        "joints_vis": vis,
        "center": list(center),
        "scale": scale,
    }


def write_mpii(root: Path, n_train: int = 4, n_test: int = 2, mat: bool = True) -> None:
    """mmpose's layout: 64 x 48 images with a red 3 x 3 block around 0-based (30, 20); every
    joint there (1-based (31, 21)); center (26, 23) (1-based) which mmpose moves down by
    15 x scale = 3 px; scale 0.2 (so the 1.25-padded box is 50 px)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    image = np.full((48, 64, 3), 40, dtype=np.uint8)
    image[19:22, 29:32] = (255, 0, 0)
    for split, count in (("train", n_train), ("val", n_test)):
        entries = []
        for i in range(count):
            name = f"{split}{i:03d}.png"
            Image.fromarray(image).save(root / "images" / name)
            entry = _person((31.0, 21.0), (26.0, 23.0), 0.2)
            entry["image"] = name
            entries.append(entry)
        (root / "annotations" / f"mpii_{split}.json").write_text(json.dumps(entries))
    if mat:  # headboxes_src (2, 2, N): corners (x1, y1), (x2, y2); diagonal 50 -> head size 30
        boxes = np.zeros((2, 2, n_test))
        boxes[1] = np.array([30.0, 40.0])[:, None]
        savemat(root / "annotations" / "mpii_gt_val.mat", {"headboxes_src": boxes})


def test_mpii_layout_loads_from_a_fixture(tmp_path: Path) -> None:
    write_mpii(tmp_path)
    train = load_dataset(f"mpii:{tmp_path}", "train")
    test = load_dataset(f"mpii:{tmp_path}", "test")
    assert isinstance(train, PoseDataset) and len(train) == 4 and len(test) == 2
    s = train.sample(0)
    assert s.image.shape == (48, 64, 3)
    np.testing.assert_allclose(s.joints[0], [30.0, 20.0])  # 0-based
    assert s.visible.sum() == NUM_JOINTS - 1 and not s.visible[15]
    np.testing.assert_allclose(s.center, [25.0, 25.0])  # (26, 23 + 15 x 0.2) - 1
    assert s.scale == pytest.approx(0.2) and math.isnan(s.head_size)
    assert test.sample(1).head_size == pytest.approx(30.0)
    crop = crop_person(s, 50)  # the 50 px box at zoom 1: the block lands where to_crop says
    x, y = np.round(crop.to_crop(s.joints[0])).astype(int)
    assert (x, y) == (30, 20) and tuple(crop.image[y, x]) == (255, 0, 0)
    assert tuple(crop.image[y + 2, x]) != (255, 0, 0)
    assert load_dataset(f"mpii:{tmp_path}", "train", n=2, seed=1).fingerprint()["n"] == 2


def test_headbox_entries_stand_in_for_the_mat_file(tmp_path: Path) -> None:
    write_mpii(tmp_path, mat=False)
    listing = tmp_path / "annotations" / "mpii_val.json"
    entries = json.loads(listing.read_text())
    for entry in entries:
        entry["headbox"] = [0, 0, 6, 8]
    listing.write_text(json.dumps(entries))
    assert load_dataset(f"mpii:{tmp_path}", "test").sample(0).head_size == pytest.approx(6.0)


def test_mpii_fixture_through_the_protocol(tmp_path: Path) -> None:
    write_mpii(tmp_path)
    ctx = pixel_context(f"mpii:{tmp_path}")
    cfg = PoseConfig(image_size=32, n_train=None, n_test=None, iterations=3, batch_size=2)
    out = PROTOCOLS.get("pose_heatmap")().run(cfg, ctx)
    assert set(out) == set(PROTOCOLS.get("pose_heatmap").metrics)
    # every person is the same, so the mean pose is exact: all 15 visible joints correct
    assert out["pckh_mean_pose"][0] == pytest.approx(1.0)
    assert 0.0 <= out["pckh"][0] <= 1.0
    assert out["pckh_margin"][0] == pytest.approx(out["pckh"][0] - 1.0)


# --- the task, the CLI, bad input, the table ----------------------------------------------------


def test_cli_eval_writes_a_result(tmp_path: Path) -> None:
    out_dir = tmp_path / "results"
    record = eval_one_result(
        "pose/mpii", "baseline:random:vit_tiny_patch16_224", out_dir,
        "--set", "n_train=8", "--set", "n_test=4", "--set", "iterations=5",
        "--set", "image_size=32", "--set", "batch_size=4",
    )  # fmt: skip
    assert record["primary_metric"] == "pckh"
    assert record["dataset"] == "stick_figures" and record["higher_is_better"] is True
    assert 0.0 <= record["metrics"]["pckh"]["mean"] <= 1.0
    assert "pckh_mean_pose" in record["metrics"] and "pckh_margin" in record["metrics"]
    code, out = run_cli("leaderboard", "--results-dir", str(out_dir))
    assert code == 0 and "pose/mpii" in out, out


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("no_annotations", "Missing annotation file"),
        ("empty", "the split is empty"),
        ("not_json", "as JSON"),
        ("bad_joints", "'joints' must be 16 x 2"),
        ("missing_image", "which does not exist"),
        ("no_headboxes", "PCKh needs each test person's head box"),
        ("short_mat", "head boxes but"),
    ],
)
def test_bad_mpii_input_is_one_line_and_writes_nothing(
    tmp_path: Path, layout: str, message: str
) -> None:
    root = tmp_path / "mpii"
    if layout != "missing":
        write_mpii(root, mat=layout != "no_headboxes")
    annotations = root / "annotations"
    if layout == "no_annotations":
        (annotations / "mpii_train.json").unlink()
    if layout == "empty":
        (annotations / "mpii_val.json").write_text("[]")
    if layout == "not_json":
        (annotations / "mpii_train.json").write_text("{oops")
    if layout == "bad_joints":
        entries = json.loads((annotations / "mpii_train.json").read_text())
        entries[1]["joints"] = entries[1]["joints"][:15]
        (annotations / "mpii_train.json").write_text(json.dumps(entries))
    if layout == "missing_image":
        (root / "images" / "val001.png").unlink()
    if layout == "short_mat":
        savemat(annotations / "mpii_gt_val.mat", {"headboxes_src": np.ones((2, 2, 1))})
    assert_refused_in_one_line(
        message, "pose/mpii", "baseline:pixels", tmp_path / "results",
        "--dataset", f"mpii:{root}", "--set", "iterations=2", "--set", "image_size=32",
    )  # fmt: skip


def test_dataset_without_keypoints_is_refused() -> None:
    code, out = run_cli(
        "eval", "--task", "pose/mpii", "--checkpoint", "baseline:pixels",
        "--dataset", "shapes", "--results-dir", "unused", "--quiet",
    )  # fmt: skip
    assert code != 0 and "has no keypoints" in out and "mpii:PATH" in out


@pytest.mark.parametrize(
    ("option", "message"),
    [("decoder=deconv", "decoder must be one of"), ("sigma=0", "sigma must be in")],
)
def test_bad_options_fail_before_any_work(option: str, message: str) -> None:
    code, out = run_cli(
        "eval", "--task", "pose/mpii", "--checkpoint", "baseline:pixels", "--set", option,
        "--results-dir", "unused", "--quiet",
    )  # fmt: skip
    assert code != 0 and message in out and len(out.strip().splitlines()) == 1, out


def test_table6_mpii_column_names_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = {line.split(":")[0]: line for line in mapping_lines(table_spec("wang2026", "6"))}
    assert lines["mpii_pckh"].startswith("mpii_pckh: pose/mpii on mpii")
    record = {
        "task": "pose/mpii",
        "model_id": "m",
        "dataset": "mpii:/data/mpii",
        "primary_metric": "pckh",
        "created_at": "2026-01-01T00:00:00",
        "metrics": {"pckh": {"mean": 0.8697}},
    }
    import eqbench.tables.papers as papers

    monkeypatch.setattr(papers, "load_results", lambda _: [record])
    tmp_path.joinpath("results").mkdir()
    _, _, rows = build("wang2026", "6", tmp_path / "results")
    row = dict(zip(rows[0], rows[-1], strict=True))
    assert row["mpii_pckh"] == "0.870"
