"""Third-party checkpoints exactly as their projects write them.

Each fixture follows the project's own save code (cited by file and line of the upstream
repository) around random timm weights. The oracle is the upstream conversion: timm's own
``checkpoint_filter_fn`` (``timm/models/vision_transformer.py``) applied to the same weights in a
timm model; the features eqbench loads must equal its features exactly (max abs diff 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PosixPath
from typing import Any

import pytest
import timm
import torch
from click.testing import CliRunner
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import Tensor

from eqbench.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from eqbench.checkpoints.safe_load import load_state_file
from eqbench.cli import main
from eqbench.errors import CheckpointError, ConfigError
from eqbench.models import load_model
from eqbench.zoo.cards import card_ids, read_card
from eqbench.zoo.submit import submit

VIT = "vit_tiny_patch16_224"
REG = "vit_small_patch14_reg4_dinov2"  # DINOv2 ViT-S/14 with 4 registers
IMAGENET = ([round(v, 6) for v in IMAGENET_MEAN], [round(v, 6) for v in IMAGENET_STD])


pytestmark = pytest.mark.usefixtures("zoo_dir")


def random_state(arch: str, seed: int = 1, **kwargs: Any) -> dict[str, Tensor]:
    """Distinctive random weights of a timm model (timm inits some tensors to constants)."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    return {k: v + torch.randn_like(v) * 0.02 for k, v in model.state_dict().items()}


def timm_oracle(arch: str, state: dict[str, Tensor], img_size: int) -> torch.nn.Module:
    """The upstream conversion: timm's ``checkpoint_filter_fn`` into a timm model built as
    eqbench builds it (headless, ``dynamic_img_size``)."""
    model = timm.create_model(
        arch, pretrained=False, num_classes=0, img_size=img_size, dynamic_img_size=True
    )
    converted = checkpoint_filter_fn(dict(state), model)
    # headless, as timm's load_pretrained with num_classes=0 (_builder.py removes the classifier)
    converted = {k: v for k, v in converted.items() if not k.startswith("head.")}
    model.load_state_dict(converted, strict=True)
    return model.eval()


def max_diff(card_id: str, oracle: torch.nn.Module, size: int) -> float:
    """Max abs difference of ``forward_features`` between ``zoo:<card_id>`` (or another model
    spec, such as ``timm:<arch>:<file>``) and the oracle."""
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    spec = card_id if ":" in card_id else f"zoo:{card_id}"
    loaded = load_model(spec, img_size=size)
    with torch.no_grad():
        got = loaded.encoder.model.forward_features(x)
        want = oracle.forward_features(x)
    assert got.shape == want.shape
    return float((got - want).abs().max())


def vit_backbone(arch: str = VIT, seed: int = 1) -> dict[str, Tensor]:
    """A ViT backbone as DINO/iBOT/MAE's ``VisionTransformer`` names it: timm's names, no head
    (dino ``vision_transformer.py`` ``head = nn.Identity()`` when num_classes=0)."""
    return random_state(arch, seed, num_classes=0)


def dino_heads(prefix: str) -> dict[str, Tensor]:
    return {
        f"{prefix}head.mlp.0.weight": torch.randn(16, 8),
        f"{prefix}head.last_layer.weight_g": torch.ones(4, 1),
    }


# --- DINOv2 -------------------------------------------------------------------------------------


def dinov2_hub(arch: str = REG, grid: int = 37) -> dict[str, Tensor]:
    """``DinoVisionTransformer.state_dict()`` as the hub releases it (dinov2
    ``models/vision_transformer.py:110-114,169``: ``cls_token`` (1, 1, D), ``pos_embed``
    (1, 1 + grid², D) including the CLS position, ``register_tokens`` (1, R, D), ``mask_token``
    (1, D); ``hub/backbones.py:58-59`` loads it strictly), at the 518 px grid (37 × 37)."""
    state = random_state(arch, num_classes=0, img_size=224)
    dim = state["cls_token"].shape[-1]
    out = {
        "cls_token": state.pop("cls_token"),
        "pos_embed": torch.randn(1, 1 + grid * grid, dim) * 0.02,
        "register_tokens": state.pop("reg_token"),
        "mask_token": torch.zeros(1, dim),
    }
    state.pop("pos_embed")
    return out | state


def test_dinov2_registers_hub_layout_equals_timms_conversion(tmp_path: Path) -> None:
    hub = dinov2_hub()
    assert hub["pos_embed"].shape == (1, 1370, 384)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(hub, path)
    submit(path, card_id="dinov2-s-reg", arch=REG)  # --format auto
    card = read_card("dinov2-s-reg")
    assert card.format == "dinov2" and card.dropped_keys == ["mask_token"]
    assert (card.preprocessing["mean"], card.preprocessing["std"]) == IMAGENET
    for size in (224, 70):
        assert max_diff("dinov2-s-reg", timm_oracle(REG, hub, size), size) == 0.0
    # the file itself as --checkpoint timm:<arch>:<file>
    assert max_diff(f"timm:{REG}:{path}", timm_oracle(REG, hub, 224), 224) == 0.0


def test_dinov2_training_teacher_checkpoint(tmp_path: Path) -> None:
    """``teacher_checkpoint.pth`` = ``{"teacher": model.teacher.state_dict()}`` (dinov2
    ``train/train.py:123-131``): ``backbone.*`` with chunked blocks (``block_chunks=4``,
    ``models/vision_transformer.py:157-161`` keeps the global index), ``dino_head.*``,
    ``ibot_head.*``."""
    hub = dinov2_hub()
    teacher: dict[str, Tensor] = {}
    for key, value in hub.items():
        if key.startswith("blocks."):
            index = int(key.split(".")[1])
            key = f"blocks.{index // 3}.{key[len('blocks.') :]}"
        teacher[f"backbone.{key}"] = value
    teacher |= {
        "dino_head.mlp.0.weight": torch.randn(8, 384),
        "ibot_head.mlp.0.weight": torch.randn(8, 384),
    }
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher}, path)
    submit(path, card_id="dinov2-teacher", arch=REG)
    card = read_card("dinov2-teacher")
    assert card.format == "dinov2"
    assert card.dropped_keys == ["dino_head.mlp.0.weight", "ibot_head.mlp.0.weight", "mask_token"]
    assert max_diff("dinov2-teacher", timm_oracle(REG, hub, 224), 224) == 0.0


# --- iBOT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("branch", ["teacher", "student"])
def test_ibot_released_state_dict_files(branch: str, tmp_path: Path) -> None:
    """iBOT's released ``checkpoint_teacher.pth`` / ``checkpoint_student.pth`` hold
    ``{"state_dict": backbone}``; its loader takes that key and strips ``module.``/``backbone.``
    (ibot ``utils.py:111-121``). Only the student has ``masked_embed``
    (``main_ibot.py:206-215``, ``models/vision_transformer.py:172``)."""
    backbone = vit_backbone()
    state = dict(backbone)
    if branch == "student":
        state["masked_embed"] = torch.zeros(1, backbone["cls_token"].shape[-1])
    path = tmp_path / f"checkpoint_{branch}.pth"
    torch.save({"state_dict": state}, path)
    submit(path, card_id=f"ibot-{branch}", arch=VIT)
    card = read_card(f"ibot-{branch}")
    assert card.format == "ibot"
    assert card.dropped_keys == (["masked_embed"] if branch == "student" else [])
    assert (card.preprocessing["mean"], card.preprocessing["std"]) == IMAGENET
    assert max_diff(f"ibot-{branch}", timm_oracle(VIT, backbone, 224), 224) == 0.0


# --- lightly ------------------------------------------------------------------------------------


def test_lightly_masked_vit_checkpoint(tmp_path: Path) -> None:
    """lightly's MAE example (``examples/pytorch_lightning/mae.py:27-43``): ``self.backbone =
    MaskedVisionTransformerTIMM(vit=vit_base_patch32_224())`` (a timm ViT with its head, plus
    ``mask_token``, ``models/modules/masked_vision_transformer_timm.py:44-49``), a decoder and a
    prediction head, saved by Lightning as ``{"state_dict": module.state_dict(), ...}``."""
    vit = random_state(VIT, num_classes=10)  # the timm ViT keeps its classifier
    state = {f"backbone.vit.{k}": v for k, v in vit.items()}
    state["backbone.mask_token"] = torch.zeros(1, 1, vit["cls_token"].shape[-1])
    state |= {
        "decoder_embed.weight": torch.randn(8, 192),
        "prediction_head.weight": torch.randn(4, 8),
    }
    path = tmp_path / "lightly_mae.ckpt"
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.2.0", "epoch": 1}, path)
    submit(path, card_id="lightly-mae", arch=VIT)
    card = read_card("lightly-mae")
    assert card.format == "lightly"
    assert card.dropped_keys == [
        "backbone.mask_token",
        "decoder_embed.weight",
        "head.bias",
        "head.weight",
        "prediction_head.weight",
    ]
    assert (card.preprocessing["mean"], card.preprocessing["std"]) == IMAGENET
    assert max_diff("lightly-mae", timm_oracle(VIT, vit, 224), 224) == 0.0


# --- SLURM launchers ----------------------------------------------------------------------------


def submitit_args(**extra: Any) -> argparse.Namespace:
    """``args`` after the SLURM launcher: dino ``run_with_submitit.py:82`` and mae
    ``submitit_pretrain.py:78-79`` replace ``output_dir`` (and MAE's ``log_dir``) by a
    ``pathlib.Path``."""
    out = PosixPath("/checkpoint/user/experiments/1234")
    return argparse.Namespace(arch="vit_tiny", lr=5e-4, output_dir=out, gpu=0, rank=0, **extra)


def test_slurm_launcher_checkpoints_load(tmp_path: Path) -> None:
    backbone = vit_backbone()
    # dino main_dino.py:278-288
    dino = {
        "student": {f"module.backbone.{k}": v + 1 for k, v in backbone.items()}
        | dino_heads("module."),
        "teacher": {f"backbone.{k}": v for k, v in backbone.items()} | dino_heads(""),
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": submitit_args(),
        "dino_loss": {"center": torch.zeros(1, 16)},
    }
    torch.save(dino, tmp_path / "dino.pth")
    obj, _ = load_state_file(tmp_path / "dino.pth")
    assert obj["args"].output_dir == PosixPath("/checkpoint/user/experiments/1234")
    # mae util/misc.py:301-307, models_mae.py:49 (mask_token) and the decoder
    mae_model = dict(backbone) | {
        "mask_token": torch.zeros(1, 1, 8),
        "decoder_embed.weight": torch.randn(8, 192),
        "decoder_pos_embed": torch.zeros(1, 197, 8),
    }
    args = submitit_args(log_dir=PosixPath("/checkpoint/user/experiments/1234"))
    mae = {"model": mae_model, "optimizer": {}, "epoch": 5, "scaler": {}, "args": args}
    torch.save(mae, tmp_path / "mae.pth")
    for name in ("dino", "mae"):
        submit(tmp_path / f"{name}.pth", card_id=f"slurm-{name}", arch=VIT)
        assert read_card(f"slurm-{name}").format == name
        assert max_diff(f"slurm-{name}", timm_oracle(VIT, backbone, 224), 224) == 0.0


class NotAPath(PosixPath):
    """A path subclass: code of its own, so still refused."""


def test_only_pathlib_paths_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "subclass.pth"
    torch.save({"args": argparse.Namespace(output_dir=NotAPath("/x"))}, path)
    with pytest.raises(CheckpointError, match="need code to load"):
        load_state_file(path)


# --- MAE ----------------------------------------------------------------------------------------


def test_mae_released_encoder_is_detected(tmp_path: Path) -> None:
    """MAE's released ``mae_pretrain_vit_*.pth`` = ``{"model": encoder}`` (no decoder, no head),
    read as ``checkpoint["model"]`` by ``main_finetune.py:237``."""
    backbone = vit_backbone()
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": backbone}, path)
    submit(path, card_id="mae-released", arch=VIT)  # --format auto
    card = read_card("mae-released")
    assert card.format == "mae" and card.dropped_keys == []
    assert (card.preprocessing["mean"], card.preprocessing["std"]) == IMAGENET
    assert max_diff("mae-released", timm_oracle(VIT, backbone, 224), 224) == 0.0
    assert max_diff(f"timm:{VIT}:{path}", timm_oracle(VIT, backbone, 224), 224) == 0.0


def test_deit_style_model_with_head_stays_timm(tmp_path: Path) -> None:
    path = tmp_path / "deit.pth"
    torch.save({"model": random_state(VIT, num_classes=10)}, path)
    submit(path, card_id="deit", arch=VIT)
    assert read_card("deit").format == "timm"


# --- preprocessing ------------------------------------------------------------------------------


def test_dino_card_records_imagenet_normalisation_and_uses_it(tmp_path: Path) -> None:
    """The README's ``--arch vit_small_patch16_224`` defaults to timm's augreg 0.5/0.5; a DINO
    file is normalised with ImageNet's statistics (dino ``main_dino.py:431``)."""
    backbone = vit_backbone()
    path = tmp_path / "dino.pth"
    teacher = {f"backbone.{k}": v for k, v in backbone.items()} | dino_heads("")
    torch.save({"teacher": teacher, "student": teacher, "epoch": 1}, path)
    submit(path, card_id="dino", arch=VIT)
    card = read_card("dino")
    assert (card.preprocessing["mean"], card.preprocessing["std"]) == IMAGENET
    assert "main_dino.py" in card.preprocessing["source"]
    encoder = load_model("zoo:dino", img_size=224).encoder
    assert encoder.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)  # type: ignore[operator]
    # the user overrides it; the card says so
    submit(path, card_id="dino-own", arch=VIT, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    own = read_card("dino-own")
    assert (
        own.preprocessing["std"] == [0.25] * 3
        and own.preprocessing["source"] == "given by the user"
    )
    assert load_model("zoo:dino-own", img_size=224).encoder.std.flatten().tolist() == [0.25] * 3  # type: ignore[operator]
    # DINO's released backbone file (a headless state dict) is DINO's without being told so
    torch.save(backbone, tmp_path / "dino_deitsmall16_pretrain.pth")
    submit(tmp_path / "dino_deitsmall16_pretrain.pth", card_id="dino-released", arch=VIT)
    released = read_card("dino-released")
    assert released.format == "dino"
    assert (released.preprocessing["mean"], released.preprocessing["std"]) == IMAGENET
    assert max_diff("dino-released", timm_oracle(VIT, backbone, 224), 224) == 0.0
    # a plain timm file (timm's state dicts keep their classifier) keeps the architecture's
    # default, and the card names it
    torch.save(random_state(VIT), tmp_path / "timm.pth")
    submit(tmp_path / "timm.pth", card_id="plain", arch=VIT)
    plain = read_card("plain")
    assert plain.format == "timm"
    assert plain.preprocessing["mean"] == [0.5] * 3
    assert plain.preprocessing["source"] == f"timm pretrained_cfg of {VIT}"


# --- patch 14 on the default tasks --------------------------------------------------------------


@pytest.mark.slow
def test_patch14_card_runs_the_default_tasks_at_a_snapped_size(tmp_path: Path) -> None:
    path = tmp_path / "dinov2.pth"
    torch.save(dinov2_hub(), path)
    submit(path, card_id="dinov2", arch=REG)
    results = tmp_path / "results"
    args = ["eval", "--task", "classification/knn,synthetic/rotation,invariance/rotation"]
    args += ["--checkpoint", "zoo:dinov2", "--results-dir", str(results), "--device", "cpu"]
    args += ["--set", "n_train=60", "--set", "n_test=30", "--set", "probe_seeds=1"]
    args += ["--set", "max_epochs=2", "--no-cache"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    assert len(records) == 3
    for record in records:
        assert record["config"]["image_size"] == 70
        assert record["adjustments"]["image_size"]["requested"] == 64
        assert record["adjustments"]["image_size"]["used"] == 70


def test_submit_suite_refuses_a_task_the_patch_size_cannot_run_before_the_card(
    tmp_path: Path, zoo_dir: Path
) -> None:
    path = tmp_path / "dinov2.pth"
    torch.save(dinov2_hub(), path)
    with pytest.raises(ConfigError, match=r"patch size 14.*multiple of 224"):
        submit(path, card_id="dinov2", arch=REG, suite="detection/maskrcnn")
    assert card_ids() == [] and not any(zoo_dir.iterdir())
