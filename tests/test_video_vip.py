"""``video/vip``: part-mask mIoU against a hand computation, multi-class propagation, the VIP
layout from a fixture, bad input, the task through the CLI and the Table 7 VIP column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from protocol_helpers import memory_store, pixel_context

from eqbench.backbones.pixels import PixelEncoder
from eqbench.checkpoints import LoadedModel
from eqbench.cli import main
from eqbench.data import load_dataset
from eqbench.data.base import DatasetSpec
from eqbench.data.video import VideoDataset
from eqbench.data.vip import PART_CLASSES
from eqbench.errors import DatasetError
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.video import VideoPropagationConfig, predict_video
from eqbench.protocols.video.parsing_metrics import PartIoU, confusion
from eqbench.tables.papers import build, mapping_lines, table_spec

# --- the metric ---------------------------------------------------------------------------------


def test_miou_by_hand_over_frames_and_classes() -> None:
    """Two 2x3 frames pooled into one matrix, void (255) left out. (gt, pred) pairs: frame 0
    (0,0) (0,0) (1,1) (1,2) (2,2); frame 1 (0,1) (1,1). Class 0: 2 shared of 3 in either;
    class 1: 2 of 4; class 2: 1 of 2; classes in no frame do not count."""
    gt = np.array([[[0, 0, 1], [1, 2, 255]], [[0, 1, 255], [255, 255, 255]]])
    pred = np.array([[[0, 0, 1], [2, 2, 2]], [[1, 1, 0], [0, 0, 0]]])
    out = PartIoU()
    out.add(gt, pred)
    assert out.summary()["miou"] == pytest.approx((2 / 3 + 2 / 4 + 1 / 2) / 3)
    assert out.summary()["pixel_acc"] == pytest.approx(5 / 7)
    per_class = out.per_class()
    assert per_class[1] == pytest.approx(0.5) and np.isnan(per_class[5])
    assert math.isnan(PartIoU().summary()["miou"])


def test_confusion_leaves_void_out_and_counts_pairs() -> None:
    gt = np.array([0, 1, 1, 255, 19])
    pred = np.array([0, 1, 0, 3, 19])
    hist = confusion(gt, pred, n=20)
    assert hist.sum() == 4 and hist[1, 0] == 1 and hist[1, 1] == 1 and hist[19, 19] == 1
    with pytest.raises(ValueError, match="differ"):
        confusion(gt, pred[:3])


def test_perfect_and_copied_predictions() -> None:
    gt = np.zeros((3, 4, 4), dtype=np.int64)
    gt[:, :2] = 7
    gt[2, :, 3] = 12  # a class only the last frame has
    perfect = PartIoU()
    perfect.add(gt, gt)
    assert perfect.summary() == {"miou": 1.0, "pixel_acc": 1.0}
    copied = PartIoU()
    copied.add(gt, np.broadcast_to(gt[0], gt.shape))
    # class 12: 0 / 4; class 0: 20 / 24 (gt 20 + pred 24 - 20); class 7: 24 / 24
    assert copied.summary()["miou"] == pytest.approx((0 + 20 / 24 + 1) / 3)


# --- multi-class propagation ----------------------------------------------------------------------


def test_identical_frames_reproduce_a_multi_class_part_mask() -> None:
    """Four part classes in patch-aligned stripes of distinct colours, the frame repeated:
    every frame's prediction is the first mask, class values kept (not renumbered)."""
    colours = [(128, 128, 128), (230, 30, 30), (30, 40, 220), (240, 220, 30)]
    classes = [0, 5, 13, 19]
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    first = np.zeros((64, 64), dtype=np.int64)
    for i, (cls, colour) in enumerate(zip(classes, colours, strict=True)):
        frame[:, 16 * i : 16 * (i + 1)] = colour
        first[:, 16 * i : 16 * (i + 1)] = cls
    frames = np.repeat(frame[None], 6, axis=0)
    cfg = VideoPropagationConfig(image_size=64, side_multiple=16)
    pred = predict_video(
        memory_store(PixelEncoder(img_size=64, grid=16), "v" * 64), frames, first, cfg
    )
    for t in range(6):
        np.testing.assert_array_equal(pred[t], first)


# --- the VIP layout -------------------------------------------------------------------------------


def write_vip(
    root: Path, videos: dict[str, int], size: tuple[int, int] = (24, 40), start: int = 1
) -> None:
    """A tiny VIP_Fine tree: ``videos`` maps names to annotated frame counts (frames numbered
    like VIP's, every 25th); a 'face' (13) square moves right over 'upper-clothes' (4) on
    background."""
    h, w = size
    for video, n_frames in videos.items():
        for t in range(n_frames):
            parts = np.zeros(size, dtype=np.uint8)
            parts[12:22, 4:36] = 4
            parts[2:10, 2 + 2 * t : 10 + 2 * t] = 13
            rgb = np.full((h, w, 3), 110, dtype=np.uint8)
            rgb[parts == 4] = (30, 60, 200)
            rgb[parts == 13] = (230, 180, 140)
            stem = f"{start + 25 * t:012d}"
            frame = root / "Images" / video / f"{stem}.jpg"
            frame.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(frame, quality=95)
            mask = root / "Annotations" / "Category_ids" / video / f"{stem}.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(parts, mode="L").save(mask)
    (root / "lists").mkdir(parents=True, exist_ok=True)
    (root / "lists" / "val_videos.txt").write_text("".join(f"{v}\n" for v in videos))
    (root / "lists" / "train_videos.txt").write_text("")


def test_vip_layout_loads_from_a_fixture(tmp_path: Path) -> None:
    write_vip(tmp_path / "VIP_Fine", {"videos7": 5, "videos12": 3})
    videos = load_dataset(f"vip:{tmp_path}", "test")  # the folder holding VIP_Fine/ also works
    assert isinstance(videos, VideoDataset)
    assert videos.videos == ["videos7", "videos12"] and videos.lengths == [5, 3]
    masks = videos.masks(0)
    assert masks.shape == (5, 24, 40) and set(np.unique(masks)) == {0, 4, 13}
    assert masks[3, 5, 9] == 13 and masks[3, 5, 7] == 0  # frame 3: face at columns 8..15
    assert videos.frames(1).shape == (3, 24, 40, 3)
    assert len(PART_CLASSES) == 20 and PART_CLASSES[13] == "face"


def test_frames_sort_numerically_and_cropmae_list_lines_work(tmp_path: Path) -> None:
    root = tmp_path / "VIP"
    write_vip(root, {"videos3": 3}, start=1)
    for path in (root / "Images" / "videos3").glob("*.jpg"):  # unpadded names: 1, 26, 51
        path.rename(path.with_name(f"{int(path.stem)}.jpg"))
    for path in (root / "Annotations" / "Category_ids" / "videos3").glob("*.png"):
        path.rename(path.with_name(f"{int(path.stem)}.png"))
    (root / "lists" / "val_videos.txt").write_text(
        "datasets/VIP/Images/videos3 datasets/VIP/Annotations/Category_ids/videos3\n"
    )
    videos = load_dataset(f"vip:{tmp_path}", "test")
    assert videos.videos == ["videos3"]
    names = [p.name for p in videos.files[0][0]]  # type: ignore[attr-defined]
    assert names == ["1.jpg", "26.jpg", "51.jpg"]


def test_vip_values_outside_the_parts_are_refused(tmp_path: Path) -> None:
    write_vip(tmp_path, {"videos1": 2})
    bad = np.full((24, 40), 40, dtype=np.uint8)  # an instance id, not a part class
    Image.fromarray(bad, mode="L").save(
        tmp_path / "Annotations" / "Category_ids" / "videos1" / f"{26:012d}.png"
    )
    videos = load_dataset(f"vip:{tmp_path}", "test")
    with pytest.raises(DatasetError, match="Category_ids"):
        videos.masks(0)


def test_vip_fixture_through_the_protocol(tmp_path: Path) -> None:
    write_vip(tmp_path, {"videos1": 6})
    ctx = pixel_context(f"vip:{tmp_path}", "v" * 64)
    cfg = VideoPropagationConfig(image_size=24, side_multiple=8, n_test=None)
    protocol = PROTOCOLS.get("video_part_propagation")
    out = protocol().run(cfg, ctx)
    assert set(out) == set(protocol.metrics)
    assert all(0.0 <= v[0] <= 1.0 for v in out.values())
    assert out["miou"][0] > out["miou_copy_first"][0], out  # the face moves 10 px


# --- the task, the CLI, bad input, the table ----------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_cli_eval_writes_a_result(tmp_path: Path) -> None:
    out_dir = tmp_path / "results"
    code, out = run_cli(
        "eval", "--task", "video/vip", "--checkpoint", "baseline:pixels",
        "--set", "n_test=1", "--results-dir", str(out_dir), "--quiet",
    )  # fmt: skip
    assert code == 0, out
    files = list(out_dir.rglob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["task"] == "video/vip" and record["primary_metric"] == "miou"
    assert 0.0 < record["metrics"]["miou"]["mean"] <= 1.0
    assert "miou_copy_first" in record["metrics"] and record["dataset"] == "shape_clips"


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("no_images", "holds no Images/ folder"),
        ("empty_list", "names no video"),
        ("no_list", "Missing video list"),
        ("no_annotation", "without an annotation"),
        ("no_annotation_dir", "has no annotation folder"),
        ("no_frames", "holds no .jpg frames"),
    ],
)
def test_bad_vip_input_is_one_line_and_writes_nothing(
    tmp_path: Path, layout: str, message: str
) -> None:
    root = tmp_path / "VIP_Fine"
    if layout != "missing":
        write_vip(root, {"videos1": 3})
    lists = root / "lists" / "val_videos.txt"
    if layout == "no_images":
        (root / "Images").rename(root / "Frames")
    if layout == "empty_list":
        lists.write_text("\n\n")
    if layout == "no_list":
        lists.unlink()
    if layout == "no_annotation":
        (root / "Annotations" / "Category_ids" / "videos1" / f"{26:012d}.png").unlink()
    if layout == "no_annotation_dir":
        (root / "Annotations" / "Category_ids").rename(root / "Annotations" / "Human_ids")
    if layout == "no_frames":
        lists.write_text("videos1\nvideos2\n")
    out_dir = tmp_path / "results"
    code, out = run_cli(
        "eval", "--task", "video/vip", "--checkpoint", "baseline:pixels",
        "--dataset", f"vip:{root}", "--results-dir", str(out_dir), "--quiet",
    )  # fmt: skip
    assert code != 0
    assert message in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert "Traceback" not in out
    assert not out_dir.exists() or not any(out_dir.rglob("*"))


def test_table7_vip_column_names_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = {line.split(":")[0]: line for line in mapping_lines(table_spec("wang2026", "7"))}
    assert lines["vip_miou"].startswith("vip_miou: video/vip on vip ×100")
    records = [
        {
            "task": task,
            "model_id": "m",
            "dataset": dataset,
            "primary_metric": metric,
            "created_at": "2026-01-01T00:00:00",
            "metrics": {metric: {"mean": value}},
        }
        for task, dataset, metric, value in (
            ("video/vip", "vip:/data/VIP_Fine", "miou", 0.405),
            ("video/vip", "shape_clips", "miou", 0.9),  # the built-in default is not VIP
        )
    ]
    import eqbench.tables.papers as papers

    monkeypatch.setattr(papers, "load_results", lambda _: records)
    tmp_path.joinpath("results").mkdir()
    _, _, rows = build("wang2026", "7", tmp_path / "results")
    row = dict(zip(rows[0], rows[-1], strict=True))
    assert row["vip_miou"] == "40.500" and row["davis17_jf"] == "—"


# --- learning is real -------------------------------------------------------------------------


@pytest.mark.slow
def test_pixels_beat_copying_the_first_mask_on_the_built_in_clips() -> None:
    """The default task (8 clips, object ids as classes): propagation with raw-pixel patch
    tokens against copying the first mask (measured: mIoU 0.797 against 0.449)."""
    encoder = PixelEncoder(img_size=144, grid=16)
    model = LoadedModel(model_id="pixels", sha256="p" * 64, encoder=encoder, spec="x", info={})
    ctx = EvalContext(
        model, memory_store(encoder, "v" * 64), DatasetSpec.parse("shape_clips"), seed=0
    )
    out = PROTOCOLS.get("video_part_propagation")().run(VideoPropagationConfig(), ctx)
    assert out["miou"][0] > out["miou_copy_first"][0] + 0.25, out
    assert out["pixel_acc"][0] > out["pixel_acc_copy_first"][0], out
