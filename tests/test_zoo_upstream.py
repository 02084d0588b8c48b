"""Third-party checkpoints exactly as their projects write them.

Each fixture follows the project's own save code (cited by file and line of the upstream
repository) around random timm weights. The oracle is the upstream conversion: timm's own
``checkpoint_filter_fn`` (``timm/models/vision_transformer.py``) applied to the same weights in a
timm model; the features eqbench loads must equal its features exactly (max abs diff 0).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path, PosixPath
from typing import Any

import pytest
import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import Tensor

from eqbench.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from eqbench.checkpoints import load_model
from eqbench.checkpoints.safe_load import load_state_file
from eqbench.errors import CheckpointError
from eqbench.zoo.cards import read_card
from eqbench.zoo.submit import submit

VIT = "vit_tiny_patch16_224"
REG = "vit_small_patch14_reg4_dinov2"  # DINOv2 ViT-S/14 with 4 registers
IMAGENET = ([round(v, 6) for v in IMAGENET_MEAN], [round(v, 6) for v in IMAGENET_STD])


@pytest.fixture(autouse=True)
def _zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    monkeypatch.setenv("EQBENCH_ZOO_DIR", str(zoo))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield zoo
    torch.set_num_threads(before)


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
    """Max abs difference of ``forward_features`` between ``zoo:<card_id>`` and the oracle."""
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    loaded = load_model(f"zoo:{card_id}", img_size=size)
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
