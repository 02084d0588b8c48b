"""``video/davis``: DAVIS J and F against hand computations and an independent oracle, label
propagation (identical frames, a naive re-implementation), the DAVIS layout from a fixture, the
built-in clips, the task through the CLI, bad input, and learning beating the copied first mask.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_refused_in_one_line, eval_one_result, run_cli
from PIL import Image
from protocol_helpers import memory_store, pixel_context
from scipy import ndimage
from skimage.morphology import disk

from eqbench.backbones.pixels import PixelEncoder
from eqbench.checkpoints import LoadedModel
from eqbench.data import load_dataset
from eqbench.data.base import DatasetSpec
from eqbench.data.clips import FRAME_SIZE, FRAMES
from eqbench.data.video import VideoDataset
from eqbench.models import load_model
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.video import (
    VideoPropagationConfig,
    encode_frames,
    encoded_size,
    predict_video,
)
from eqbench.protocols.video.davis_metrics import (
    DavisScores,
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    region_similarity,
)
from eqbench.protocols.video.propagation import (
    PropagationConfig,
    labels_to_mask,
    neighbourhood,
    one_hot_labels,
    propagate,
    propagate_step,
)
from eqbench.tables.papers import build, mapping_lines, table_spec


def block(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """A bool mask with ``rows[0] <= r < rows[1]`` and ``cols[0] <= c < cols[1]`` set."""
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


# --- J and F by hand --------------------------------------------------------------------------


def test_region_similarity_by_hand() -> None:
    gt = block((4, 4), (0, 2), (0, 2))  # 4 pixels
    pred = block((4, 4), (0, 2), (0, 3))  # 6 pixels, 4 shared
    assert region_similarity(gt, pred) == pytest.approx(4 / 6)
    assert region_similarity(gt, np.zeros_like(gt)) == 0.0
    assert region_similarity(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # both empty


def test_boundary_map_by_hand() -> None:
    """A 2x2 block: the ring of pixels that differ from their right, lower or lower-right
    neighbour, i.e. the block's outline moved half a pixel up and left."""
    mask = block((5, 5), (1, 3), (1, 3))
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(boundary_map(mask), expected)
    # on the last row only the right neighbour counts, on the last column only the lower one:
    # the image's own edge is no boundary
    edge = block((3, 3), (1, 3), (1, 3))
    np.testing.assert_array_equal(
        boundary_map(edge), np.array([[1, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=bool)
    )


def test_boundary_tolerance_is_0008_of_the_diagonal() -> None:
    assert boundary_tolerance((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert boundary_tolerance((100, 100)) == 2  # ceil(1.13)
    assert boundary_tolerance((5, 5)) == 1


def test_f_measure_of_a_shifted_square_by_hand() -> None:
    """A 20x20 square and the same square 5 px to the right, in 100x100 (tolerance 2 px).

    Each outline is the 80-pixel perimeter of a 21x21 box. Of the shifted one's: 18 of 21 on
    the top row lie within 2 px of the other's (16 on it, 2 past its corner), 18 of 21 on the
    bottom row, 4 of 19 on its left side (2 near each corner) and none on its right side: 40 of
    80. The same count holds the other way round, so precision = recall = F = 1/2.
    """
    gt = block((100, 100), (20, 40), (20, 40))
    pred = block((100, 100), (20, 40), (25, 45))
    assert boundary_map(gt).sum() == 80
    assert boundary_f_measure(gt, pred) == pytest.approx(0.5)
    assert boundary_f_measure(gt, gt) == 1.0


def test_f_measure_empty_masks() -> None:
    gt = block((50, 50), (10, 20), (10, 20))
    empty = np.zeros_like(gt)
    assert boundary_f_measure(gt, empty) == 0.0  # precision 1, recall 0
    assert boundary_f_measure(empty, gt) == 0.0  # precision 0, recall 1
    assert boundary_f_measure(empty, empty) == 1.0


def test_f_measure_of_a_nested_square_by_hand() -> None:
    """Prediction a 10x10 square centred in a 20x20 ground truth, 100x100 (tolerance 2): the
    outlines are 5 px apart everywhere, so nothing matches and F = 0. A 16x16 one, 2 px in from
    each side: every predicted boundary pixel is within 2 px of the truth's (precision 1), but
    at each corner of the truth's outline 3 pixels are farther than 2 px from the prediction's
    corner ((19, 19): √8, (19, 20) and (20, 19): √5), so recall is 68/80."""
    gt = block((100, 100), (20, 40), (20, 40))
    assert boundary_f_measure(gt, block((100, 100), (25, 35), (25, 35))) == 0.0
    recall = 68 / 80
    assert boundary_f_measure(gt, block((100, 100), (22, 38), (22, 38))) == pytest.approx(
        2 * recall / (1 + recall)
    )


def oracle_f(gt: np.ndarray, pred: np.ndarray) -> float:
    """F written from the definition in davis2017-evaluation ``davis2017/metrics.py``
    (``f_measure`` lines 57-119, ``_seg2bmap`` lines 122-178), independently of eqbench's code:
    boundary pixels found one by one, dilation with ``skimage.morphology.disk`` as the toolkit
    does (through ``scipy.ndimage`` here, through OpenCV there)."""

    def bmap(seg: np.ndarray) -> np.ndarray:
        h, w = seg.shape
        out = np.zeros_like(seg)
        for y in range(h):
            for x in range(w):
                if y == h - 1 and x == w - 1:
                    continue
                if y == h - 1:
                    nbrs = [seg[y, x + 1]]
                elif x == w - 1:
                    nbrs = [seg[y + 1, x]]
                else:
                    nbrs = [seg[y, x + 1], seg[y + 1, x], seg[y + 1, x + 1]]
                out[y, x] = any(n != seg[y, x] for n in nbrs)
        return out

    radius = math.ceil(0.008 * math.hypot(*gt.shape))
    gb, pb = bmap(gt), bmap(pred)
    gd = ndimage.binary_dilation(gb, structure=disk(radius).astype(bool))
    pd = ndimage.binary_dilation(pb, structure=disk(radius).astype(bool))
    n_p, n_g = pb.sum(), gb.sum()
    if n_p == 0 or n_g == 0:
        precision = 0.0 if n_p > 0 else 1.0
        recall = 0.0 if n_g > 0 else 1.0
    else:
        precision, recall = (pb & gd).sum() / n_p, (gb & pd).sum() / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("shape", [(24, 40), (60, 33), (130, 150)])
def test_f_measure_matches_the_toolkit_definition_on_random_blobs(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(4):
        noise = [ndimage.gaussian_filter(rng.random(shape), 3) for _ in range(2)]
        gt, pred = noise[0] > np.median(noise[0]), noise[1] > np.quantile(noise[1], 0.6)
        assert boundary_f_measure(gt, pred) == pytest.approx(oracle_f(gt, pred), abs=1e-12)


def test_davis_scores_skip_first_and_last_frame_and_average_over_objects() -> None:
    """4 frames, objects 1 and 2 (void 255 is background). Frames 0 and 3 are not scored, so
    predicting nothing there costs nothing. Frame 1 is right; in frame 2 object 1's prediction
    covers 8 of its 16 pixels and nothing else (J = 1/2), object 2 is right."""
    gt = np.zeros((4, 12, 12), dtype=np.int64)
    gt[:, 0:4, 0:4] = 1
    gt[:, 6:10, 6:10] = 2
    gt[0, 11, 11] = 255
    pred = gt.copy()
    pred[0] = 0
    pred[3] = 0
    pred[2, 0:2, 0:4] = 0
    scores = DavisScores()
    scores.add_sequence("seq", gt, np.where(pred == 255, 0, pred))
    assert scores.objects == ["seq_1", "seq_2"]
    assert scores.j == pytest.approx([(1 + 0.5) / 2, 1.0])
    f_half = boundary_f_measure(gt[2] == 1, pred[2] == 1)
    assert 0 < f_half < 1
    assert scores.f == pytest.approx([(1 + f_half) / 2, 1.0])
    out = scores.summary()
    assert out["j"] == pytest.approx((0.75 + 1.0) / 2)
    assert out["jf"] == pytest.approx((out["j"] + out["f"]) / 2)


# --- propagation ------------------------------------------------------------------------------


def test_neighbourhood_counts() -> None:
    allowed = neighbourhood(3, 4, 1, torch.device("cpu"))
    counts = allowed.sum(dim=1).reshape(3, 4)
    assert counts.tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]]
    assert bool(neighbourhood(3, 4, 0, torch.device("cpu")).all())


def test_one_hot_labels_nearest_downsampling() -> None:
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[0:4, 4:8] = 2
    labels = one_hot_labels(mask, (2, 2), 3)
    assert labels.shape == (3, 2, 2)
    assert labels.argmax(0).tolist() == [[0, 2], [0, 0]]


def naive_step(target: torch.Tensor, sources: torch.Tensor, labels: torch.Tensor, radius: int,
               topk: int, temperature: float) -> torch.Tensor:  # fmt: skip
    """DINO's ``label_propagation`` (eval_video_segmentation.py lines 113-150) target patch by
    target patch: exp(cos / T) over the window, keep the k largest, normalise, average."""
    n, _, h, w = sources.shape
    out = torch.zeros(labels.shape[1], h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            q = target[:, i, j].double()
            q = q / q.norm()
            cands = []
            for f in range(n):
                for a in range(h):
                    for b in range(w):
                        if radius and (abs(a - i) > radius or abs(b - j) > radius):
                            continue
                        k = sources[f, :, a, b].double()
                        cands.append((float(q @ (k / k.norm())), f, a, b))
            cands.sort(key=lambda c: -c[0])
            kept = [c for c in cands if c[0] >= cands[min(topk, len(cands)) - 1][0]]
            weights = [math.exp(c[0] / temperature) for c in kept]
            for wgt, (_, f, a, b) in zip(weights, kept, strict=True):
                out[:, i, j] += wgt / sum(weights) * labels[f, :, a, b].double()
    return out


@pytest.mark.parametrize(("radius", "topk", "temperature"), [(1, 3, 0.1), (0, 5, 0.7), (2, 1, 1)])
def test_propagate_step_matches_a_naive_loop(radius: int, topk: int, temperature: float) -> None:
    gen = torch.Generator().manual_seed(radius + topk)
    target = torch.randn(6, 4, 5, generator=gen)
    sources = torch.randn(3, 6, 4, 5, generator=gen)
    labels = torch.softmax(torch.randn(3, 4, 4, 5, generator=gen), dim=1)
    cfg = PropagationConfig(topk=topk, temperature=temperature, size_mask_neighborhood=radius)
    got = propagate_step(target, sources, labels, neighbourhood(4, 5, radius, target.device), cfg)
    want = naive_step(target, sources, labels, radius, topk, temperature)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_queue_keeps_the_first_frame_and_the_last_n() -> None:
    """Frame t of a clip whose features are one-hot in time matches only itself: with
    n_last_frames = 2 and topk = 1, frame 4's context is frames 0, 2 and 3, so a feature equal
    to frame 1's finds nothing better than the others; one equal to frame 0's finds frame 0."""
    feats = torch.zeros(5, 6, 1, 1)
    for t in range(5):
        feats[t, t] = 1.0
    feats[4, 0] = 1.0  # frame 4 looks like frame 0 (and like itself, which is not in context)
    first = torch.tensor([[[0.0]], [[1.0]]])  # label 1 in frame 0
    cfg = PropagationConfig(n_last_frames=2, topk=1, size_mask_neighborhood=0)
    soft = propagate(feats, first, cfg)
    assert soft.shape == (5, 2, 1, 1)
    assert soft[4, 1, 0, 0] == 1.0  # taken from frame 0, which is always kept


def test_labels_to_mask_upsamples_patch_labels() -> None:
    """Label 1 on patch (1, 2) of a 2x3 grid, upsampled x4 to 8x12 then x2 to 16x24. Bilinear
    weights of that patch along each axis in its 4 pixels are 0.625, 0.875, 1, 1 (the image edge
    clamps), so only its top-left pixel, at 0.625² < 1/2, goes to the background: DINO's
    upsampling rounds off an object's convex corners."""
    soft = torch.zeros(2, 2, 3)
    soft[0] = 1.0
    soft[0, 1, 2], soft[1, 1, 2] = 0.0, 1.0
    ids = labels_to_mask(soft, (8, 12), (16, 24))
    expected = torch.zeros(16, 24, dtype=torch.int64)
    expected[8:, 16:] = 1
    expected[8:10, 16:18] = 0
    assert torch.equal(ids, expected)


def test_identical_frames_reproduce_the_first_mask_with_pixel_features() -> None:
    """Default options (7 frames, top-5, radius 12, T = 0.1), raw-pixel patch tokens, one frame
    repeated: two coloured full-height stripes aligned with the 4-px patches on grey. Every
    patch's top-5 neighbours share its colour, hence its label, and straight patch-aligned
    edges survive the bilinear upsampling, so every frame's prediction is the annotation."""
    frame = np.full((64, 64, 3), 128, dtype=np.uint8)
    first = np.zeros((64, 64), dtype=np.int64)
    for obj, (cols, colour) in enumerate([((4, 24), (230, 30, 30)), ((32, 56), (30, 40, 220))]):
        frame[:, cols[0] : cols[1]] = colour
        first[:, cols[0] : cols[1]] = obj + 1
    frames = np.repeat(frame[None], 10, axis=0)
    cfg = VideoPropagationConfig(image_size=64, side_multiple=16)
    pred = predict_video(
        memory_store(PixelEncoder(img_size=64, grid=16), "enc" * 4), frames, first, cfg
    )
    for t in range(10):
        np.testing.assert_array_equal(pred[t], first)


def test_identical_frames_reproduce_the_first_labels_with_a_random_vit() -> None:
    """Random ViT tokens of a noise frame repeated: each patch's nearest neighbour is itself
    (top-1), so the propagated labels of every frame are the first frame's one-hot labels,
    exactly, whatever the queue holds; the hard predictions at the annotation's size (48x80,
    encoded at 96x160) are those of the first frame's labels, which differ from the annotation
    only where upsampling rounds off the rectangles' corners (one encoded pixel each)."""
    model = load_model("baseline:random:micro_vit", img_size=96)
    patch = model.encoder.patch_size
    store = memory_store(model.encoder, "enc" * 4)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(48, 80, 3), dtype=np.uint8)
    first = np.zeros((48, 80), dtype=np.int64)
    half = patch // 2  # the annotation is half the encoded size
    first[half * 1 : half * 3, half * 2 : half * 5] = 1
    first[half * 4 : half * 6, half * 6 : half * 9] = 2
    frames = np.repeat(frame[None], 6, axis=0)
    cfg = VideoPropagationConfig(image_size=96, side_multiple=patch, topk=1, n_last_frames=3)
    feats = encode_frames(store, frames, (96, 160))
    grid = (int(feats.shape[-2]), int(feats.shape[-1]))
    labels = one_hot_labels(torch.from_numpy(first), grid, 3)
    soft = propagate(feats, labels, cfg.propagation())
    for t in range(6):
        assert torch.equal(soft[t], labels)
    hard = labels_to_mask(labels, (96, 160), (48, 80)).numpy()
    pred = predict_video(store, frames, first, cfg)
    for t in range(1, 6):
        np.testing.assert_array_equal(pred[t], hard)
    corners = [
        (r, c)
        for rows, cols in (((1, 3), (2, 5)), ((4, 6), (6, 9)))
        for r in (rows[0] * half, rows[1] * half - 1)
        for c in (cols[0] * half, cols[1] * half - 1)
    ]
    for r, c in np.argwhere(hard != first):  # rounded-off corners only
        assert min(max(abs(r - y), abs(c - x)) for y, x in corners) < half // 2


def test_encoded_size_follows_dino_read_frame() -> None:
    assert encoded_size(480, 854, 480, 64, 16) == (480, 832)  # DINO: 854 -> 832
    assert encoded_size(854, 480, 480, 64, 16) == (832, 480)
    assert encoded_size(144, 256, 144, 16, 16) == (144, 256)
    assert encoded_size(480, 854, 476, 64, 14) == (476, 826)  # 847 -> 832 -> 826 (patch 14)


# --- data ---------------------------------------------------------------------------------------


def test_shape_clips_are_seeded_and_exact() -> None:
    clips = load_dataset("shape_clips", "test", n=2, seed=3)
    assert isinstance(clips, VideoDataset)
    assert clips.lengths == [FRAMES, FRAMES] and len(clips) == 2 * FRAMES
    frames, masks = clips.frames(1), clips.masks(1)
    assert frames.shape == (FRAMES, *FRAME_SIZE, 3) and masks.shape == (FRAMES, *FRAME_SIZE)
    again = load_dataset("shape_clips", "test", n=5, seed=3)
    np.testing.assert_array_equal(again.frames(1), frames)  # clip i does not depend on n
    n_obj = len(clips.clips[1].shapes)  # type: ignore[attr-defined]
    assert set(np.unique(masks)) <= set(range(n_obj + 1)) and masks[0].max() >= 1
    for k, shape in enumerate(clips.clips[1].shapes, start=1):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(frames[0][masks[0] == k], np.broadcast_to(
            shape.colour, ((masks[0] == k).sum(), 3)))  # fmt: skip
    assert not np.array_equal(masks[0], masks[-1])  # things move
    assert clips.load([0, FRAMES + 3], 32).shape == (2, 3, 32, 32)


def palette_png(path: Path, ids: np.ndarray) -> None:
    """Write ``ids`` as a palette PNG (DAVIS's format): palette index = object id."""
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 252
    img.putpalette(palette)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_davis(root: Path, sequences: dict[str, int], size: tuple[int, int] = (24, 40)) -> None:
    """A tiny DAVIS-2017 tree: ``sequences`` maps names to frame counts; each sequence shows a
    red square (object 1) moving right and a green one (object 2) still, on grey."""
    h, w = size
    for seq, n_frames in sequences.items():
        for t in range(n_frames):
            ids = np.zeros(size, dtype=np.int64)
            ids[4:12, 2 + t : 10 + t] = 1
            ids[14:22, 28:36] = 2
            rgb = np.full((h, w, 3), 120, dtype=np.uint8)
            rgb[ids == 1] = (220, 20, 20)
            rgb[ids == 2] = (20, 200, 20)
            frame = root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg"
            frame.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(frame, quality=95)
            palette_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", ids)
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("".join(f"{s}\n" for s in sequences))
    (sets / "train.txt").write_text("")


def test_davis_layout_loads_from_a_fixture(tmp_path: Path) -> None:
    write_davis(tmp_path / "DAVIS", {"bear": 5, "car": 4})
    videos = load_dataset(f"davis:{tmp_path}", "test")  # the folder holding DAVIS/ also works
    assert isinstance(videos, VideoDataset)
    assert videos.videos == ["bear", "car"] and videos.lengths == [5, 4] and len(videos) == 9
    masks = videos.masks(0)
    assert masks.shape == (5, 24, 40) and set(np.unique(masks)) == {0, 1, 2}  # indices, not RGB
    assert masks[3, 4, 5] == 1 and masks[3, 4, 4] == 0
    assert videos.frames(1).shape == (4, 24, 40, 3)
    first = load_dataset(f"davis:{tmp_path / 'DAVIS'}", "test", n=1)
    assert first.videos == ["bear"]  # type: ignore[attr-defined]
    assert first.fingerprint() != videos.fingerprint()


def test_davis_fixture_through_the_protocol(tmp_path: Path) -> None:
    write_davis(tmp_path, {"bear": 6})
    ctx = pixel_context(f"davis:{tmp_path}", "enc" * 4)
    cfg = VideoPropagationConfig(image_size=24, side_multiple=8, n_test=None)
    out = PROTOCOLS.get("video_propagation")().run(cfg, ctx)
    assert set(out) == set(PROTOCOLS.get("video_propagation").metrics)
    assert all(0.0 <= v[0] <= 1.0 for v in out.values())
    assert out["jf"][0] > 0.3 and out["jf_copy_first"][0] > 0.3


# --- the task, the CLI, bad input, the table ----------------------------------------------------


def test_cli_eval_writes_a_result(tmp_path: Path) -> None:
    record = eval_one_result(
        "video/davis", "baseline:pixels", tmp_path / "results", "--set", "n_test=1"
    )
    assert record["primary_metric"] == "jf"
    assert 0.0 < record["metrics"]["jf"]["mean"] <= 1.0
    assert record["dataset"] == "shape_clips"


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("empty_list", "names no sequence"),
        ("no_annotation", "without an annotation"),
        ("no_list", "Missing sequence list"),
        ("no_frames", "holds no .jpg frames"),
    ],
)
def test_bad_davis_input_is_one_line_and_writes_nothing(
    tmp_path: Path, layout: str, message: str
) -> None:
    root = tmp_path / "DAVIS"
    if layout != "missing":
        write_davis(root, {"bear": 3})
    if layout == "empty_list":
        (root / "ImageSets" / "2017" / "val.txt").write_text("\n\n")
    if layout == "no_annotation":
        (root / "Annotations" / "480p" / "bear" / "00001.png").unlink()
    if layout == "no_list":
        (root / "ImageSets" / "2017" / "val.txt").unlink()
    if layout == "no_frames":
        (root / "ImageSets" / "2017" / "val.txt").write_text("bear\nzebra\n")
    assert_refused_in_one_line(
        message,
        "video/davis",
        "baseline:pixels",
        tmp_path / "results",
        "--dataset",
        f"davis:{root}",
    )


def test_image_dataset_is_refused() -> None:
    code, out = run_cli(
        "eval", "--task", "video/davis", "--checkpoint", "baseline:pixels",
        "--dataset", "shapes", "--results-dir", "unused", "--quiet",
    )  # fmt: skip
    assert code != 0 and "has no videos" in out and "davis:PATH" in out


def test_table7_columns_name_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = mapping_lines(table_spec("wang2026", "7"))
    assert lines[0].startswith("davis17_jf: video/davis on davis")
    assert lines[1].startswith("davis17_j: video/davis on davis [j]")
    assert lines[2].startswith("davis17_f: video/davis on davis [f]")
    assert lines[3].startswith("vip_miou: video/vip on vip")
    record = {
        "task": "video/davis",
        "model_id": "m",
        "dataset": "davis:/data/DAVIS",
        "primary_metric": "jf",
        "created_at": "2026-01-01T00:00:00",
        "metrics": {k: {"mean": v} for k, v in {"jf": 0.6, "j": 0.55, "f": 0.65}.items()},
    }
    import eqbench.tables.papers as papers

    monkeypatch.setattr(papers, "load_results", lambda _: [record])
    tmp_path.joinpath("results").mkdir()
    _, _, rows = build("wang2026", "7", tmp_path / "results")
    assert rows[-1][:5] == ["eqbench", "m", "60.000", "55.000", "65.000"]
    assert rows[-1][5] == "—"  # a task, no result on vip yet


# --- learning is real -------------------------------------------------------------------------


@pytest.mark.slow
def test_pixels_beat_copying_the_first_mask_on_the_built_in_clips() -> None:
    """The default task (8 clips): propagation with raw-pixel patch tokens against copying the
    first annotation to every frame (measured: J&F 0.708 against 0.276)."""
    encoder = PixelEncoder(img_size=144, grid=16)
    model = LoadedModel(model_id="pixels", sha256="p" * 64, encoder=encoder, spec="x", info={})
    ctx = EvalContext(
        model, memory_store(encoder, "enc" * 4), DatasetSpec.parse("shape_clips"), seed=0
    )
    out = PROTOCOLS.get("video_propagation")().run(VideoPropagationConfig(), ctx)
    assert out["jf"][0] > out["jf_copy_first"][0] + 0.3, out
    assert out["j"][0] > out["j_copy_first"][0] + 0.3, out
    assert out["f"][0] > out["f_copy_first"][0] + 0.3, out
