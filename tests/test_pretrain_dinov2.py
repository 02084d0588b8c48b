"""DINOv2 (arXiv 2304.07193): KoLeo, Sinkhorn-Knopp and the composed loss against references
written here (and lightly's), the ``dinov2`` step, and TIR on top of it (arXiv 2503.18753)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# the micro models and images of the DINO/iBOT tests
from test_pretrain_dino import IMG, SMALL, check_teacher_is_saved, images

from eqbench.backbones import create_encoder
from eqbench.errors import ConfigError, EqbenchError
from eqbench.losses import DINOv2Loss, KoLeoLoss, masked_token_cross_entropy, sinkhorn_knopp
from eqbench.methods import DINOv2, TIRDINOv2, TrainBatch, build_method

pytestmark = pytest.mark.usefixtures("one_thread")

#: micro_vit at 32 px has 4 tokens: mask 2 of them in every global crop
ALWAYS_MASK = {"mask_prob": 1.0, "mask_ratio": 0.5, "mask_ratio_var": 0.0}


def build(name: str = "dinov2", **options: Any) -> Any:
    torch.manual_seed(0)
    encoder = create_encoder("micro_vit", img_size=IMG)
    return build_method(name, encoder, IMG, {**SMALL, **options})


def randn(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ----------------------------------------------------------------------------- references
def reference_koleo(x: np.ndarray, eps: float = 1e-8) -> float:
    """Brute force: every pairwise distance of the normalised rows, the smallest per row."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    dist = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    np.fill_diagonal(dist, np.inf)
    return float(-np.log(dist.min(axis=1) + eps).mean())


def reference_sinkhorn(logits: np.ndarray, temp: float, iterations: int = 3) -> np.ndarray:
    """SwAV/DINOv2's algorithm in float64: Q (K, B), alternate prototype and sample sums."""
    q = np.exp(logits.astype(np.float64) / temp).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


def reference_dinov2_loss(  # type: ignore[no-untyped-def]
    teacher, student, t_patch, s_patch, masks, features, temp, koleo_weight=0.1
):
    """ssl_meta_arch.forward_backward written out: teacher targets swapped between the two global
    crops, local crops against both, the global term scaled by 2 over (2 + 2L) loss terms; the
    iBOT term with weights 1/#masked per image over all 2B images; KoLeo per global crop."""
    n_local = len(student) - 2
    n_terms = 2 + 2 * n_local
    targets = torch.from_numpy(reference_sinkhorn(torch.cat(teacher).numpy(), temp)).float()
    t0, t1 = targets.chunk(2)
    swapped = torch.cat([t1, t0])  # global crop A is matched to teacher B
    lsm = F.log_softmax(torch.cat(student[:2]) / 0.1, dim=-1)
    dino = -torch.sum(swapped * lsm, dim=-1).mean() * 2 / n_terms
    for s in student[2:]:
        lsm = F.log_softmax(s / 0.1, dim=-1)
        for t in (t0, t1):
            dino = dino - torch.sum(t * lsm, dim=-1).mean() / n_terms
    patch_targets = torch.from_numpy(reference_sinkhorn(t_patch.numpy(), temp)).float()
    ce = -torch.sum(patch_targets * F.log_softmax(s_patch / 0.1, dim=-1), dim=-1)  # (M,)
    weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    ibot = (ce * weight).sum() / masks.shape[0] * 2 * 0.5  # loss_scales, ibot_loss_scale
    koleo = sum(reference_koleo(f.numpy()) for f in features)
    return dino.item(), ibot.item(), koleo, dino.item() + ibot.item() + koleo_weight * koleo


# ----------------------------------------------------------------------------- KoLeo
def test_koleo_matches_the_reference_and_lightly() -> None:
    from lightly.loss import KoLeoLoss as LightlyKoLeo

    x = randn((12, 5), 0)
    ours = KoLeoLoss()(x).item()
    assert ours == pytest.approx(reference_koleo(x.numpy()), rel=1e-5)
    assert ours == pytest.approx(LightlyKoLeo()(x).item(), rel=1e-5)


def test_koleo_hand_computed() -> None:
    # Four unit vectors at right angles in the plane: each nearest neighbour is √2 away.
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert KoLeoLoss()(square * 3).item() == pytest.approx(-math.log(math.sqrt(2)), rel=1e-6)
    # (1, 0), (0, 1) and the diagonal: every nearest neighbour is 45° away, 2 sin(22.5°).
    fan = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    d = 2 * math.sin(math.pi / 8)
    assert KoLeoLoss()(fan).item() == pytest.approx(-math.log(d), rel=1e-6)


def test_koleo_gradient_spreads_close_points_and_survives_duplicates() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]], requires_grad=True)
    KoLeoLoss()(x).backward()
    assert x.grad is not None
    assert x.grad[1, 1] < 0  # descending the loss moves point 1 away from point 0
    dup = torch.ones(4, 3, requires_grad=True)
    loss = KoLeoLoss()(dup)
    loss.backward()
    assert torch.isfinite(loss) and dup.grad is not None and torch.isfinite(dup.grad).all()
    with pytest.raises(EqbenchError, match="n >= 2"):
        KoLeoLoss()(torch.ones(1, 3))


# ----------------------------------------------------------------------------- Sinkhorn-Knopp
@pytest.mark.parametrize(("b", "k", "temp"), [(16, 8, 0.1), (6, 32, 0.04)])
def test_sinkhorn_matches_the_reference_and_lightly(b: int, k: int, temp: float) -> None:
    from lightly.loss.swav_loss import sinkhorn

    logits = randn((b, k), 1, 0.3)
    ours = sinkhorn_knopp(logits, temp, iterations=3)
    expected = reference_sinkhorn(logits.numpy(), temp, 3)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(ours, sinkhorn(logits, iterations=3, epsilon=temp))


def test_sinkhorn_marginals() -> None:
    b, k = 32, 8
    logits = randn((b, k), 2, 0.2)
    targets = sinkhorn_knopp(logits, 0.1, iterations=3)
    assert (targets >= 0).all()
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(b))  # each sample: a distribution
    mass = targets.sum(dim=0)  # each prototype: B/K, up to the last column step's error
    torch.testing.assert_close(mass, torch.full((k,), b / k), rtol=0.1, atol=0.0)
    converged = sinkhorn_knopp(logits, 0.1, iterations=50)  # more iterations: doubly stochastic
    torch.testing.assert_close(converged.sum(dim=0), torch.full((k,), b / k), rtol=1e-4, atol=0)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(b))
    # Unlike a softmax, a prototype every sample prefers is given less than the others.
    biased = logits.clone()
    biased[:, 0] += 0.3
    assert F.softmax(biased / 0.1, dim=1).sum(0)[0] > 2 * b / k
    assert sinkhorn_knopp(biased, 0.1).sum(0)[0] == pytest.approx(b / k, rel=0.05)


def test_sinkhorn_is_stable_and_shift_invariant() -> None:
    logits = randn((5, 7), 3)
    big = sinkhorn_knopp(logits + 100.0, 0.04)  # exp(2500) would overflow without the shift
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, sinkhorn_knopp(logits, 0.04))
    assert sinkhorn_knopp(torch.zeros(0, 7), 0.04).shape == (0, 7)
    with pytest.raises(EqbenchError, match="temperature"):
        sinkhorn_knopp(logits, 0.0)


# ----------------------------------------------------------------------------- the loss
def fixed_inputs(
    b: int = 6, k: int = 16, kp: int = 12, n: int = 5, n_local: int = 2
) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(11)
    masks = torch.rand(2 * b, n, generator=gen) < 0.4
    masks[3] = False  # an image without masked tokens counts as 0
    m = int(masks.sum())
    return {
        "teacher_out": [randn((b, k), i, 0.5) for i in range(2)],
        "student_out": [randn((b, k), 10 + i, 0.5) for i in range(2 + n_local)],
        "teacher_patch": randn((m, kp), 20, 0.5),
        "student_patch": randn((m, kp), 21, 0.5),
        "masks": masks,
        "features": [randn((b, 8), 30 + i) for i in range(2)],
    }


def test_masked_token_cross_entropy_matches_the_full_grid_form() -> None:
    inputs = fixed_inputs()
    masks = inputs["masks"]
    targets = F.softmax(inputs["teacher_patch"], dim=-1)
    got = masked_token_cross_entropy(targets, inputs["student_patch"], masks, 0.1)
    full_t = torch.zeros(*masks.shape, 12)
    full_s = torch.zeros(*masks.shape, 12)
    full_t[masks], full_s[masks] = targets, inputs["student_patch"]
    ce = -torch.sum(full_t * F.log_softmax(full_s / 0.1, dim=-1), dim=-1)  # (2B, N)
    per_image = (ce * masks).sum(1) / masks.sum(1).clamp(min=1)
    assert got.item() == pytest.approx(per_image.mean().item(), rel=1e-6)


@pytest.mark.parametrize("temp", [0.04, 0.07])
def test_dinov2_loss_matches_the_reference_composition(temp: float) -> None:
    inputs = fixed_inputs()
    out = DINOv2Loss(16, 12)(**inputs, teacher_temp=temp)
    dino, ibot, koleo, total = reference_dinov2_loss(
        inputs["teacher_out"],
        inputs["student_out"],
        inputs["teacher_patch"],
        inputs["student_patch"],
        inputs["masks"],
        inputs["features"],
        temp,
    )
    assert out["dino"].item() == pytest.approx(dino, rel=1e-5)
    assert out["ibot_patch"].item() == pytest.approx(ibot, rel=1e-5)
    assert out["koleo"].item() == pytest.approx(koleo, rel=1e-5)
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    weighted = DINOv2Loss(16, 12, cls_weight=0.5, patch_weight=2.0, koleo_weight=0.0)
    out = weighted(**inputs, teacher_temp=temp)
    assert out["loss"].item() == pytest.approx(0.5 * dino + 2.0 * ibot, rel=1e-5)


def test_dinov2_loss_ema_centering() -> None:
    inputs = fixed_inputs()
    loss = DINOv2Loss(16, 12, centering="ema", koleo_weight=0.0)
    center = randn((1, 16), 40, 0.1)
    loss.center.copy_(center)
    out = loss(**inputs, teacher_temp=0.07)
    teacher = torch.stack(inputs["teacher_out"])
    targets = F.softmax((teacher - center) / 0.07, dim=-1)  # (2, B, K)
    pairs = []
    for v, s in enumerate(inputs["student_out"]):
        for q in range(2):
            if q != v:
                pairs.append(-torch.sum(targets[q] * F.log_softmax(s / 0.1, -1), -1).mean())
    assert out["dino"].item() == pytest.approx(torch.stack(pairs).mean().item(), rel=1e-5)
    expected = center * 0.9 + teacher.flatten(0, 1).mean(0, keepdim=True) * 0.1
    torch.testing.assert_close(loss.center, expected)
    patch_center = inputs["teacher_patch"].mean(0, keepdim=True) * 0.1  # masked tokens only
    torch.testing.assert_close(loss.patch_center, patch_center)


def test_dinov2_loss_gradient_reaches_only_the_student() -> None:
    inputs = fixed_inputs()
    for key in ("teacher_out", "student_out", "features"):
        inputs[key] = [x.requires_grad_(True) for x in inputs[key]]
    for key in ("teacher_patch", "student_patch"):
        inputs[key].requires_grad_(True)
    DINOv2Loss(16, 12)(**inputs, teacher_temp=0.07)["loss"].backward()
    assert (
        all(t.grad is None for t in inputs["teacher_out"]) and inputs["teacher_patch"].grad is None
    )
    assert all(s.grad is not None for s in inputs["student_out"] + inputs["features"])
    assert inputs["student_patch"].grad is not None


# ----------------------------------------------------------------------------- the method
def test_dinov2_heads_teacher_and_defaults() -> None:
    method = build()
    assert isinstance(method, DINOv2)
    assert set(method.teacher) == {"encoder", "head", "ibot_head"}  # separate heads, DINOv2
    assert method.ibot_head.mlp[0].weight.data_ptr() != method.head.mlp[0].weight.data_ptr()
    assert method.head.last_layer.norm is not None  # DINOv2 learns the last layer's norms
    opts = method.options
    assert (opts["koleo_weight"], opts["centering"], opts["sinkhorn_iterations"]) == (
        0.1,
        "sinkhorn_knopp",
        3,
    )
    assert opts["teacher_temp"] == opts["teacher_patch_temp"] == 0.07
    low, high = (
        opts["mask_ratio"] - opts["mask_ratio_var"],
        opts["mask_ratio"] + opts["mask_ratio_var"],
    )
    assert (low, high, opts["mask_prob"]) == pytest.approx((0.1, 0.5, 0.5))  # DINOv2's masking
    shared = build(shared_head=True, teacher_temp=0.05)
    assert set(shared.teacher) == {"encoder", "head"}
    assert shared.options["teacher_patch_temp"] == 0.05  # follows teacher_temp
    with pytest.raises(ConfigError, match="Did you mean 'koleo_weight'"):
        build(koleo_wieght=0.1)
    with pytest.raises(ConfigError, match="centering"):
        build(centering="mean")
    with pytest.raises(ConfigError, match="shared head"):
        build(shared_head=True, patch_out_dim=32)


def test_dinov2_step_matches_the_reference_computed_by_hand() -> None:
    method = build(n_local=2, **ALWAYS_MASK)
    out = method.training_step(TrainBatch(images(), torch.Generator().manual_seed(0), step=0))
    gen = torch.Generator().manual_seed(0)
    crops = method.crops(TrainBatch(images(), gen))
    masks = method.masks(16, gen, torch.device("cpu"))  # drawn after the crops
    assert masks.sum(1).tolist() == [2] * 16
    teacher, g = method.teacher, torch.cat(crops.globals)
    with torch.no_grad():
        t_feat = teacher["encoder"](g)
        t_logits = teacher["head"](t_feat.cls)
        t_patch = teacher["ibot_head"](t_feat.patch[masks])
        s_feat = method.encoder.forward_masked(g, masks, method.mask_token)
        s_logits = list(method.head(s_feat.cls).chunk(2))
        s_logits += [method.head(method.encoder(v).cls) for v in crops.locals]
        s_patch = method.ibot_head(s_feat.patch[masks])
    dino, ibot, koleo, total = reference_dinov2_loss(
        list(t_logits.chunk(2)), s_logits, t_patch, s_patch, masks, list(s_feat.cls.chunk(2)), 0.07
    )
    assert out["dino"].item() == pytest.approx(dino, rel=1e-4)
    assert out["ibot_patch"].item() == pytest.approx(ibot, rel=1e-4)
    assert out["koleo"].item() == pytest.approx(koleo, rel=1e-4)
    assert out["loss"].item() == pytest.approx(total, rel=1e-4)
    assert out["teacher_temp"].item() == pytest.approx(0.07)


def test_dinov2_loss_falls_on_a_fixed_batch() -> None:
    method = build(**ALWAYS_MASK)
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):  # the same crops and masks every step
        out = method.training_step(TrainBatch(images(), torch.Generator().manual_seed(0)))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        method.update_teacher(0.99)
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0] - 0.1, losses
    assert all(p.grad is not None for p in method.ibot_head.parameters())
    assert method.mask_token.grad is not None


def test_tir_on_dinov2() -> None:
    method = build("tir+dinov2", recon_weight=0.5, n_local=1, **ALWAYS_MASK)
    assert isinstance(method, TIRDINOv2) and isinstance(method, DINOv2)
    assert (method.d_patch, method.d_equi, method.d_inv) == (64, 16, 48)  # a quarter
    assert method.options["transform"] == "se2"  # the paper's g for DINOv2
    assert set(method.teacher) == {"encoder", "head", "token_head", "ibot_head"}
    assert method.head.mlp[0].in_features == method.ibot_head.mlp[0].in_features == 48
    crops = method.crops(TrainBatch(images(), torch.Generator().manual_seed(3)))
    assert torch.equal(crops.globals[1], method.transform.apply(crops.u, crops.theta))
    out = method.training_step(TrainBatch(images(), torch.Generator().manual_seed(3)))
    assert {"dino", "ibot_patch", "koleo", "recon_1", "recon_2"} <= set(out)
    torch.testing.assert_close(out["recon"], (out["recon_1"] + out["recon_2"]) / 2)
    torch.testing.assert_close(out["loss"], out["ssl"] + 0.5 * out["recon"])
    out["loss"].backward()
    assert (
        method.token_head.weight.grad is not None
        and method.decoders[0].linear.weight.grad is not None
    )
    rotation = build("tir+dinov2", transform="rotation", d_equi=32)
    assert rotation.options["transform"] == "rotation" and rotation.d_equi == 32
    control = build("tir+dinov2", recon_weight=0.0)
    out = control.training_step(TrainBatch(images(), torch.Generator().manual_seed(3)))
    assert "recon" not in out and out["loss"].item() == out["ssl"].item()


@pytest.mark.parametrize("name", ["dinov2", "tir+dinov2"])
def test_teacher_backbone_is_saved_for_evaluation(name: str, tmp_path: Path) -> None:
    check_teacher_is_saved(name, tmp_path / "run")
