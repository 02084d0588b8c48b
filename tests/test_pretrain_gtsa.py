"""GTSA (arXiv 2304.08014): overlap geometry under rotations, its losses against hand-computed
values and references written here, the correspondence warm-up, and training on a fixed batch."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from eqbench.backbones import create_encoder
from eqbench.errors import ConfigError
from eqbench.losses import (
    correspondence_weight,
    nearest_neighbour_pairs,
    patch_correspondence_loss,
    region_loss,
)
from eqbench.losses.gtsa import rotate_maps
from eqbench.methods import TrainBatch, build_method
from eqbench.methods.augment import AugmentConfig, LocalCropConfig, MultiCropAugment
from eqbench.methods.gtsa_views import GTSAViews
from eqbench.methods.overlap import intersection, intersection_area, rotate_boxes

IMG = 32
SMALL = {"out_dim": 32, "rotation_dims": [16, 8]}


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotate_boxes_follows_rot90_of_a_box_mask(k: int) -> None:
    size = 12
    box = torch.tensor([[2.0, 3.0, 7.0, 5.0]])  # x0, y0, x1, y1 in pixels
    mask = torch.zeros(size, size)
    mask[3:5, 2:7] = 1  # rows y0..y1, columns x0..x1
    turned = torch.rot90(mask, k, dims=(0, 1))
    rows, cols = turned.nonzero(as_tuple=True)
    expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    mapped = rotate_boxes(box, torch.tensor([k]), size)
    assert mapped[0].tolist() == [float(v) for v in expected]
    assert torch.equal(rotate_boxes(box, torch.tensor([k + 4]), size), mapped)


def coordinate_images(n: int, side: int) -> torch.Tensor:
    """Images whose channels 0 and 1 hold the x and y of each pixel centre as fractions of the
    side (channel 2 is 0.5): a crop shows exactly where its pixels come from."""
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    x = centres.view(1, side).expand(side, side)
    y = centres.view(side, 1).expand(side, side)
    image = torch.stack([x, y, torch.full_like(x, 0.5)])
    return image.unsqueeze(0).repeat(n, 1, 1, 1)


def test_overlap_boxes_cover_the_same_content_after_rotation() -> None:
    """RoIAlign of the mapped overlap box on each rotated crop equals that region cut from the
    original image, rotated by the crop's k (every k in 0..3 occurs)."""
    source, n = 256, 16
    plain = {"flip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": (0.0, 0.0)}
    config = AugmentConfig(crop_scale=(0.3, 1.0), solarize_p=(0.0, 0.0), **plain)  # type: ignore[arg-type]
    local = LocalCropConfig(n_local=4, local_size=32, local_crop_scale=(0.1, 0.3), local_blur_p=0)
    views = GTSAViews(MultiCropAugment(config, local, 64, 16))
    images = coordinate_images(n, source)
    crops = views(images, torch.Generator().manual_seed(3))
    assert [v.shape[-1] for v in crops.views] == [64, 64, 32, 32, 32, 32]
    out, seen_turns = 4, set()
    index = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    for v, view in enumerate(crops.views):
        for other in range(2):
            if other == v:
                continue
            shared = intersection(crops.boxes[v], crops.boxes[other])  # image fractions
            assert bool((intersection_area(crops.boxes[v], crops.boxes[other]) > 0.01).all())
            mapped = crops.overlap(v, other).float()  # rotated crop's pixels
            pooled = roi_align(view, torch.cat([index, mapped], 1), out, aligned=True)
            cut = roi_align(
                images, torch.cat([index, shared.float() * source], 1), out, aligned=True
            )
            expected = rotate_maps(cut, crops.turns[v])
            # Tolerance: half a pixel of the smallest crop (RoIAlign clamps at its border).
            torch.testing.assert_close(pooled[:, :2], expected[:, :2], atol=0.006, rtol=0)
            seen_turns |= set(crops.turns[v].tolist())
    assert seen_turns == {0, 1, 2, 3}


def test_local_crops_are_redrawn_until_they_overlap_both_global_crops() -> None:
    config = AugmentConfig(crop_scale=(0.1, 0.1), flip_p=0.0)
    local = LocalCropConfig(n_local=3, local_crop_scale=(0.05, 0.05))
    views = GTSAViews(MultiCropAugment(config, local, 32, 16), min_overlap=0.01)
    crops = views(torch.zeros(64, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
    for v in range(1, len(crops.views)):
        for g in range(min(v, 2)):
            area = intersection_area(crops.boxes[v], crops.boxes[g])
            assert bool((area > (0.02 if v < 2 else 0.01)).all())


def test_gtsa_rejects_flipped_crops() -> None:
    with pytest.raises(ConfigError, match="flip"):
        build("gtsa", augment={"flip_p": 0.5})


# ------------------------------------------------------------------------------ losses
def reference_rot90(grid: list[list[list[float]]], k: int) -> list[list[list[float]]]:
    """Counter-clockwise quarter turns of an ``h × w`` grid of vectors: out[i][j] = in[j][w-1-i]."""
    for _ in range(k % 4):
        h, w = len(grid), len(grid[0])
        grid = [[grid[j][w - 1 - i] for j in range(h)] for i in range(w)]
    return grid


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_region_loss_against_a_reference(k: int) -> None:
    # A 2×2 map and the box [0, 2]² at scale 1 with a 2×2 output: RoIAlign returns the cells.
    gen = torch.Generator().manual_seed(k)
    student = torch.randn(1, 3, 2, 2, generator=gen)
    teacher = torch.randn(1, 3, 2, 2, generator=gen)
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    loss = region_loss(student, teacher, box, box, torch.tensor([k]), 2, 1.0)
    s = student[0].permute(1, 2, 0).tolist()  # (h, w, C)
    t = reference_rot90(teacher[0].permute(1, 2, 0).tolist(), k)
    expected = -sum(cosine(s[i][j], t[i][j]) for i in range(2) for j in range(2)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # A student that is the rotated teacher reaches the minimum −1.
    rotated = torch.rot90(teacher, k, dims=(-2, -1))
    assert region_loss(rotated, teacher, box, box, torch.tensor([k]), 2, 1.0).item() == (
        pytest.approx(-1.0, abs=1e-6)
    )


def test_region_loss_pools_only_the_boxes() -> None:
    # Teacher: channel 0 everywhere but a (0, 1)·5 column on the right; student: (0, 1) in the
    # top-left cell only. Boxes pick those single cells, so the loss is exactly −1.
    teacher = torch.zeros(1, 2, 4, 4)
    teacher[0, 0] = 1.0
    teacher[0, :, :, 3] = torch.tensor([0.0, 5.0]).view(2, 1)
    student = torch.zeros(1, 2, 4, 4)
    student[0, 0] = 1.0
    student[0, :, 0, 0] = torch.tensor([0.0, 1.0])
    s_box = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # cell (0, 0) at 8 px per cell
    t_box = torch.tensor([[24.0, 8.0, 32.0, 16.0]])  # cell (1, 3)
    loss = region_loss(student, teacher, s_box, t_box, torch.tensor([0]), 1, 1 / 8)
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    whole = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    assert region_loss(student, teacher, whole, t_box, torch.tensor([0]), 1, 1 / 8).item() > -1


def test_patch_correspondence_hand_computed() -> None:
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    # s→t: s0 ↦ t0 (cos 1), s1 ↦ t1 (cos 1/√2); t→s: t0 ↦ s0 (1), t1 ↦ either (1/√2).
    assert patch_correspondence_loss(student, teacher, 1).item() == pytest.approx(-1.0)
    both = -(1 + 1 / math.sqrt(2)) / 2
    assert patch_correspondence_loss(student, teacher, 2).item() == pytest.approx(both)
    assert patch_correspondence_loss(student, teacher, 9).item() == pytest.approx(both)


def reference_matches(queries: torch.Tensor, candidates: torch.Tensor, k: int) -> float:
    """Brute force: mean −cos over the k queries with the most similar nearest candidates."""
    total = 0.0
    for q_img, c_img in zip(queries.tolist(), candidates.tolist(), strict=True):
        best = sorted((max(cosine(q, c) for c in c_img) for q in q_img), reverse=True)[:k]
        total += -sum(best) / len(best)
    return total / queries.shape[0]


def test_patch_correspondence_against_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(3, 9, 5, generator=gen)
    teacher = torch.randn(3, 16, 5, generator=gen)
    for k in (1, 4, 9):
        expected = 0.5 * (
            reference_matches(student, teacher, k) + reference_matches(teacher, student, k)
        )
        got = patch_correspondence_loss(student, teacher, k)
        assert got.item() == pytest.approx(expected, abs=1e-5)
    kept, matched = nearest_neighbour_pairs(student, teacher, 4)
    assert kept.shape == matched.shape == (3, 4, 5)
    sims = F.cosine_similarity(kept, matched, dim=-1)
    assert bool((sims[:, :-1] >= sims[:, 1:]).all())  # decreasing similarity


def test_correspondence_warmup() -> None:
    assert [correspondence_weight(s, 0.5, 3) for s in range(5)] == [0, 0, 0, 0.5, 0.5]
    assert correspondence_weight(0, 0.5, 0) == 0.5


def build(name: str = "gtsa", **options: Any) -> Any:
    torch.manual_seed(0)
    encoder = create_encoder("micro_vit", img_size=IMG)
    return build_method(name, encoder, IMG, {**SMALL, **options})


def smooth_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    return (F.interpolate(coarse, size=IMG, mode="bilinear") * 255).byte()


def test_training_step_adds_correspondence_after_warmup() -> None:
    method = build(pc_warmup_steps=3, pc_weight=0.5, rotation_weight=0.25)
    images = smooth_images()
    with torch.no_grad():
        for step, weight in ((2, 0.0), (3, 0.5)):
            out = method.training_step(TrainBatch(images, torch.Generator().manual_seed(1), step))
            expected = out["crop"] + weight * out["correspondence"] + 0.25 * out["rotation"]
            assert out["pc_weight"].item() == weight
            assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_student_and_teacher_heads_and_defaults() -> None:
    method = build()
    assert method.roi_sizes == (2, 2) and method.num_matches == (2, 1)  # 2×2 and 1×1 maps
    assert set(method.teacher) == {"encoder", "projector"}
    assert not any(p.requires_grad for p in method.teacher.parameters())
    # The projector's blocks are residual where widths match (micro_vit: 64 → 64).
    assert method.projector.residual and not method.predictor.residual
    paper = build(roi_sizes=[10, 4], num_matches=[98, 18], n_local=8)
    assert paper.roi_sizes == (10, 4) and len(paper.views.rotations) == 2


def test_loss_falls_on_a_fixed_batch() -> None:
    method = build(pc_warmup_steps=0)
    optimizer = torch.optim.AdamW(
        [p for p in method.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0
    )
    images = smooth_images()
    losses = []
    for _ in range(8):
        out = method.training_step(TrainBatch(images, torch.Generator().manual_seed(0), 100))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        method.update_teacher(0.99)
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0] - 0.1
