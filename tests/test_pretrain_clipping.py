"""Gradient clipping: per parameter (DINO, iBOT, GTSA), per module (DINOv2), global; and every
shipped config clips as its reference code does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eqbench.errors import ConfigError
from eqbench.train import PretrainConfig, available_configs, load_pretrain_config
from eqbench.train.clipping import clip_gradients, module_groups


class Toy(nn.Module):
    """A backbone, a head and a loose parameter (like iBOT's mask token)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)
        self.mask_token = nn.Parameter(torch.zeros(4))


def toy_with_grads(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    model = Toy()
    for p in model.parameters():
        p.grad = torch.randn_like(p) * torch.linspace(0.5, 8.0, p.numel()).view_as(p)
    return model


def dino_clip_gradients(model: nn.Module, clip: float) -> None:
    """DINO's ``utils.clip_gradients`` (facebookresearch/dino, utils.py lines 132–141)."""
    for _, p in model.named_parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)


def test_per_parameter_matches_dino() -> None:
    ours, ref = toy_with_grads(), toy_with_grads()
    before = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ours.parameters()]))
    norm = clip_gradients(ours, 3.0, "per_parameter")
    dino_clip_gradients(ref, 3.0)
    assert norm == pytest.approx(float(before), rel=1e-6)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
        assert float(a.grad.norm()) <= 3.0 + 1e-4
    # global clipping would have scaled every gradient by one factor: not what DINO does
    glob = toy_with_grads()
    clip_gradients(glob, 3.0, "global")
    assert not torch.allclose(glob.head.weight.grad, ref.head.weight.grad)


def test_per_module_matches_dinov2() -> None:
    ours, ref = toy_with_grads(), toy_with_grads()
    clip_gradients(ours, 3.0, "per_module")
    # DINOv2 (dinov2/train/train.py lines 257–259): clip_grad_norm_ on each student module;
    # the mask token belongs to the backbone there
    nn.utils.clip_grad_norm_([*ref.encoder.parameters(), ref.mask_token], 3.0)
    nn.utils.clip_grad_norm_(ref.head.parameters(), 3.0)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    assert sorted(module_groups(ours)) == ["encoder", "head"]


def test_unknown_mode_suggests_the_fix() -> None:
    with pytest.raises(ConfigError, match="per_parameter"):
        PretrainConfig(method="dino", grad_clip=3.0, grad_clip_mode="per_paramter")


#: How each reference clips: (max norm or None, mode). DINO/iBOT/GTSA: utils.clip_gradients at
#: 3.0; DINOv2: per student module at 3.0; VICReg, SimCLR, MAE, AugSelf, E-SSL, SIE: no clipping.
REFERENCE_CLIP = {
    "dino": (3.0, "per_parameter"),
    "ibot": (3.0, "per_parameter"),
    "gtsa": (3.0, "per_parameter"),
    "dinov2": (3.0, "per_module"),
    "simclr": (None, None),
    "mae": (None, None),
    "augself": (None, None),
    "essl": (None, None),
    "equimod": (None, None),
    "sie": (None, None),
    "rotation_supervised": (None, None),  # positive control, recipe of vicreg_photos_cpu
}


@pytest.mark.parametrize("name", [n for n in available_configs() if "vicreg" not in n])
def test_shipped_configs_clip_as_their_reference(name: str) -> None:
    cfg = load_pretrain_config(name)
    clip, mode = REFERENCE_CLIP[cfg.method.rsplit("+", 1)[-1]]
    assert cfg.grad_clip == clip
    if clip is not None:
        assert cfg.grad_clip_mode == mode


def test_vicreg_imagenet_recipe_does_not_clip() -> None:
    assert load_pretrain_config("vicreg_vits16_imagenet").grad_clip is None
