"""DINO and iBOT (arXiv 2104.14294, 2111.07832): losses against lightly and a reference written
here, the EMA teacher, multi-crop, masking, and TIR on top of them (arXiv 2503.18753)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from eqbench.backbones import create_encoder
from eqbench.errors import ConfigError
from eqbench.losses import DINOLoss, IBOTPatchLoss
from eqbench.methods import (
    AugmentConfig,
    MultiCropAugment,
    SelfDistillation,
    TIRDistillation,
    TrainBatch,
    build_method,
)
from eqbench.methods.augment import LocalCropConfig, default_local_size
from eqbench.methods.dino import warmup_value
from eqbench.methods.heads import DINOHead
from eqbench.methods.masking import random_patch_masks

IMG = 32
SMALL = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    return (F.interpolate(coarse, size=IMG, mode="bilinear") * 255).byte()


def build(name: str = "dino", **options: Any) -> Any:
    torch.manual_seed(0)
    encoder = create_encoder("micro_vit", img_size=IMG)
    method = build_method(name, encoder, IMG, {**SMALL, **options})
    assert isinstance(method, SelfDistillation)
    return method


# ----------------------------------------------------------------------------- reference losses
def reference_dino(teacher, student, center, t_temp, s_temp):  # type: ignore[no-untyped-def]
    """main_dino.py's DINOLoss.forward, written out: chunk, pairs q ≠ v, mean."""
    t = [F.softmax((x - center) / t_temp, dim=-1) for x in teacher]
    total, n = 0.0, 0
    for q, tq in enumerate(t):
        for v, sv in enumerate(student):
            if v == q:
                continue
            total += torch.sum(-tq * F.log_softmax(sv / s_temp, dim=-1), dim=-1).mean()
            n += 1
    new_center = center * 0.9 + torch.cat(teacher).mean(0, keepdim=True) * 0.1
    return total / n, new_center


def logits(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize(("n_local", "t_temp"), [(0, 0.04), (3, 0.07)])
def test_dino_loss_matches_lightly_and_the_reference(n_local: int, t_temp: float) -> None:
    from lightly.loss import DINOLoss as LightlyDINOLoss

    k, b = 32, 6
    teacher = [logits((b, k), i) for i in range(2)]
    student = [logits((b, k), 10 + i) for i in range(2 + n_local)]
    center = logits((1, k), 99) * 0.1
    ours = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    ours.center.copy_(center)
    theirs = LightlyDINOLoss(k, warmup_teacher_temp=t_temp, teacher_temp=t_temp)
    theirs.center.copy_(center.view(1, 1, k))
    ref, ref_center = reference_dino(teacher, student, center, t_temp, 0.1)
    got = ours(teacher, student, t_temp)
    expected = theirs(teacher, student, teacher_temp=t_temp)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(ours.center, theirs.center.view(1, k))
    torch.testing.assert_close(ours.center, ref_center)


def test_dino_loss_gradient_reaches_only_the_student() -> None:
    teacher = [logits((4, 8), i).requires_grad_(True) for i in range(2)]
    student = [logits((4, 8), 5 + i).requires_grad_(True) for i in range(3)]
    DINOLoss(8)(teacher, student, 0.04).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and float(s.grad.abs().sum()) > 0 for s in student)


def test_dino_loss_hand_computed() -> None:
    # Uniform teacher (equal logits) vs a student with K equal logits: CE = log K on each pair.
    loss = DINOLoss(4)([torch.zeros(2, 4)] * 2, [torch.ones(2, 4)] * 3, 0.04)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=1e-6)


def reference_ibot(teacher, student, masks, center, t_temp, s_temp):  # type: ignore[no-untyped-def]
    """main_ibot.py's patch term, written out: per crop q, per image mean over masked tokens."""
    total = 0.0
    for t, s, m in zip(teacher, student, masks, strict=True):
        target = F.softmax((t - center) / t_temp, dim=-1)
        ce = torch.sum(-target * F.log_softmax(s / s_temp, dim=-1), dim=-1)  # (B, N)
        total += (torch.sum(ce * m.float(), dim=-1) / m.sum(-1).clamp(min=1.0)).mean()
    all_tokens = torch.cat([t.mean(1) for t in teacher]).mean(0, keepdim=True)
    return total / len(teacher), center * 0.9 + all_tokens * 0.1


def test_ibot_patch_loss_matches_lightly_and_the_reference() -> None:
    from lightly.loss import IBOTPatchLoss as LightlyIBOT

    k, b, h, w = 16, 4, 2, 3
    teacher = [logits((b, h * w, k), i) for i in range(2)]
    student = [logits((b, h * w, k), 10 + i) for i in range(2)]
    gen = torch.Generator().manual_seed(7)
    masks = [torch.rand(b, h * w, generator=gen) < 0.4 for _ in range(2)]
    masks[0][1] = False  # an image without masked tokens counts as 0
    center = logits((1, k), 3) * 0.1
    ours = IBOTPatchLoss(k)
    ours.center.copy_(center)
    got = ours(teacher, student, masks, 0.07)
    ref, ref_center = reference_ibot(teacher, student, masks, center, 0.07, 0.1)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(ours.center, ref_center)
    # lightly's loss takes one crop's masked tokens; its centre is updated over the masked
    # tokens only (DINOv2), iBOT's over all tokens: compare the loss values, crop by crop.
    per_crop = []
    for t, s, m in zip(teacher, student, masks, strict=True):
        theirs = LightlyIBOT(k, teacher_temp=0.07, student_temp=0.1)
        theirs.center.value.copy_(center)
        per_crop.append(theirs(t[m], s[m], m.view(b, h, w)).item())
    assert got.item() == pytest.approx(sum(per_crop) / 2, rel=1e-5)


# ----------------------------------------------------------------------------- parts
def test_teacher_temperature_warms_up_linearly() -> None:
    values = [warmup_value(0.04, 0.07, s, 4) for s in range(6)]
    assert values == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    assert warmup_value(0.04, 0.07, 0, 0) == 0.07


def test_head_last_layer_is_weight_normalised() -> None:
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    x = torch.randn(3, 8)
    unit = F.normalize(head.mlp(x), dim=-1)
    torch.testing.assert_close(head(x), unit @ F.normalize(head.last_layer.weight, dim=1).T)
    assert head.last_layer.norm is None  # norm_last_layer: the norms stay 1
    learned = DINOHead(8, 10, 16, 4, norm_last_layer=False, patch_out_dim=6)
    assert learned.last_layer.norm is not None
    assert learned.forward_patch(torch.randn(3, 5, 8)).shape == (3, 5, 6)


def test_teacher_is_a_frozen_ema_of_the_student() -> None:
    method = build()
    teacher_params = dict(method.teacher.named_parameters())
    assert teacher_params and not any(p.requires_grad for p in teacher_params.values())
    student = {
        f"{n}.{k}": p for n, m in method.student_modules().items() for k, p in m.named_parameters()
    }
    assert set(student) == set(teacher_params)
    for name, p in teacher_params.items():
        assert torch.equal(p, student[name])  # starts as a copy
    before = {k: v.clone() for k, v in teacher_params.items()}
    with torch.no_grad():
        for p in student.values():
            p.add_(1.0)
    method.update_teacher(0.75)
    for name, p in teacher_params.items():
        torch.testing.assert_close(p, 0.75 * before[name] + 0.25 * student[name])
    method.train()
    assert method.training and not method.teacher.training  # no drop-path in the teacher


def test_multicrop_sizes_order_and_seeding() -> None:
    augment = MultiCropAugment(AugmentConfig(), LocalCropConfig(n_local=3), 64, 16)
    assert augment.local_size == 32 == default_local_size(64, 16)
    assert default_local_size(224, 16) == 96 and default_local_size(32, 16) == 16
    gen = torch.Generator().manual_seed(0)
    v1, _ = augment(images(), gen)
    local = augment.local_crops(images(), gen)
    assert v1.shape == (8, 3, 64, 64) and len(local) == 3
    assert all(x.shape == (8, 3, 32, 32) for x in local)
    assert not torch.equal(local[0], local[1])
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(images(), gen)[0], v1)
    assert torch.equal(augment.local_crops(images(), gen)[2], local[2])
    with pytest.raises(ConfigError, match="local_crop_scale"):
        LocalCropConfig(local_crop_scale=(0.5, 0.2))


def test_local_crop_blur_is_dinos_at_96_px() -> None:
    # DINO (main_dino.py lines 451-455, utils.py lines 40-54): 96 px local crops blurred with a
    # PIL radius (σ) uniform in [0.1, 2] pixels of the crop; global 224 px views the same.
    augment = MultiCropAugment(AugmentConfig(), LocalCropConfig(local_size=96), 224, 16)
    assert augment.local_blur.ranges["sigma"] == pytest.approx((0.1, 2.0))
    assert augment.blur.ranges["sigma"] == pytest.approx((0.1, 2.0))
    # a smaller local crop is blurred by the same fraction of its side: σ · local_size / 96
    small = MultiCropAugment(AugmentConfig(), LocalCropConfig(), 64, 16)
    assert small.local_size == 32
    assert small.local_blur.ranges["sigma"] == pytest.approx((0.1 / 3, 2.0 / 3))


def test_random_masks_follow_the_ratio_and_probability() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = random_patch_masks(2000, 100, gen, ratio=0.3, ratio_var=0.2, prob=0.5)
    counts = masks.sum(1)
    masked = counts > 0
    assert 0.45 < masked.float().mean().item() < 0.55
    assert counts[masked].min() >= 10 and counts.max() <= 50
    assert abs(counts[masked].float().mean().item() - 29.5) < 1.5  # E floor(100 r) = 29.5
    always = random_patch_masks(4, 10, gen, ratio=0.3, ratio_var=0.0, prob=1.0)
    assert always.sum(1).tolist() == [3, 3, 3, 3]


def test_masked_forward_replaces_only_masked_tokens_before_attention() -> None:
    encoder = create_encoder("micro_vit", img_size=IMG).eval()
    x = torch.rand(2, 3, IMG, IMG)
    token = torch.randn(64)
    none = torch.zeros(2, 4, dtype=torch.bool)
    torch.testing.assert_close(encoder.forward_masked(x, none, token).patch, encoder(x).patch)
    mask = none.clone()
    mask[0, 2] = True
    out = encoder.forward_masked(x, mask, token)
    assert not torch.allclose(out.patch[0], encoder(x).patch[0])
    torch.testing.assert_close(out.patch[1], encoder(x).patch[1])  # other image untouched
    # A masked token no longer depends on its pixels.
    y = x.clone()
    y[0, :, 16:, :16] = 0.5  # patch (1, 0) = token 2
    torch.testing.assert_close(encoder.forward_masked(y, mask, token).patch, out.patch)
    with pytest.raises(ConfigError, match="cannot mask"):
        pixels = create_encoder("pixels", img_size=IMG)
        pixels.forward_masked(x, mask, token)


# ----------------------------------------------------------------------------- methods
def test_dino_step_matches_a_loss_computed_by_hand() -> None:
    method = build("dino", n_local=2)
    batch = TrainBatch(images(), torch.Generator().manual_seed(0), step=0)
    center = method.dino_loss.center.clone()
    out = method.training_step(batch)
    crops = method.crops(TrainBatch(images(), torch.Generator().manual_seed(0)))
    with torch.no_grad():
        t = [method.teacher["head"](method.teacher["encoder"](v).cls) for v in crops.globals]
        s = [method.head(method.encoder(v).cls) for v in crops.globals + crops.locals]
    ref, _ = reference_dino(t, s, center, 0.04, 0.1)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert out["teacher_temp"].item() == pytest.approx(0.04)
    p_t = F.softmax((torch.cat(t) - center) / 0.04, dim=-1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    assert out["teacher_entropy"].item() == pytest.approx(entropy.item(), rel=1e-4)
    assert out["dino_kl"].item() == pytest.approx(ref.item() - entropy.item(), rel=1e-4, abs=1e-5)
    assert float(method.dino_loss.center.abs().sum()) > 0  # the centre moved


def test_ibot_loss_parts_and_masks() -> None:
    method = build("ibot", mask_prob=1.0, mask_ratio=0.5, mask_ratio_var=0.0, patch_weight=0.5)
    out = method.training_step(TrainBatch(images(), torch.Generator().manual_seed(0)))
    torch.testing.assert_close(out["loss"], out["dino"] + 0.5 * out["ibot_patch"])
    assert method.mask_token is not None and method.patch_loss is not None
    assert float(method.patch_loss.center.abs().sum()) > 0
    separate = build("ibot", shared_head=False, patch_out_dim=48)
    assert separate.head.patch_last_layer is not None
    assert separate.patch_loss.center.shape == (1, 48)
    with pytest.raises(ConfigError, match="Did you mean 'mask_ratio'"):
        build("ibot", mask_ration=0.3)
    with pytest.raises(ConfigError, match="Did you mean 'n_local'"):
        build("dino", n_locals=2)


@pytest.mark.parametrize("base", ["dino", "ibot"])
def test_tir_on_distillation(base: str) -> None:
    method = build(f"tir+{base}", recon_weight=0.5, n_local=1)
    assert isinstance(method, TIRDistillation)
    assert (method.d_patch, method.d_equi, method.d_inv) == (64, 16, 48)  # a quarter
    assert method.head.mlp[0].in_features == 48
    assert "token_head" in method.teacher  # the teacher computes z_inv too
    batch = TrainBatch(images(), torch.Generator().manual_seed(3))
    crops = method.crops(batch)
    assert torch.equal(crops.globals[1], method.transform.apply(crops.u, crops.theta))
    assert torch.equal(crops.targets[0], method.transform.apply(crops.u, crops.theta, 1 / 3))
    out = method.training_step(TrainBatch(images(), torch.Generator().manual_seed(3)))
    torch.testing.assert_close(out["recon"], (out["recon_1"] + out["recon_2"]) / 2)
    torch.testing.assert_close(out["loss"], out["ssl"] + 0.5 * out["recon"])
    control = build(f"tir+{base}", recon_weight=0.0)
    assert control.has_unused_parameters
    out = control.training_step(TrainBatch(images(), torch.Generator().manual_seed(3)))
    assert "recon" not in out and out["loss"].item() == out["ssl"].item()


def check_teacher_is_saved(method: str, run: Path) -> None:
    """Pretrain ``method`` on micro_vit for two steps into ``run``; its EMA teacher's backbone is
    saved for evaluation beside the student's and loads as a ``-teacher`` model."""
    from eqbench.checkpoints import load_state_file
    from eqbench.dataclass_dicts import from_dict
    from eqbench.models import load_model
    from eqbench.train import TEACHER_CHECKPOINT_NAME, PretrainConfig, pretrain

    cfg = from_dict(
        PretrainConfig,
        {
            "method": method,
            "backbone": "micro_vit",
            "img_size": 32,
            "n_images": 16,
            "batch_size": 8,
            "steps": 2,
            "warmup_steps": 1,
            "device": "cpu",
            "tensorboard": False,
            "method_options": SMALL,
        },
        "test",
    )
    student = pretrain(cfg, run)
    teacher = run / TEACHER_CHECKPOINT_NAME
    model = load_model(str(teacher), img_size=32)
    assert model.model_id.endswith("-teacher")
    s = load_state_file(student)[0]["backbone"]
    t = load_state_file(teacher)[0]["backbone"]
    assert s.keys() == t.keys()
    # the EMA teacher lags the student: same architecture, different weights after training
    assert any(not torch.equal(s[k], t[k]) for k in s)


def test_teacher_backbone_is_saved_for_evaluation(tmp_path: Path) -> None:
    check_teacher_is_saved("dino", tmp_path / "run")
