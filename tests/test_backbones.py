"""Backbones: feature shapes for every registered name, and outputs checked against timm."""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch

from eqbench.backbones import BACKBONES, Encoder, PixelEncoder, TimmEncoder, create_encoder
from eqbench.backbones.base import FEATURE_KINDS, GRID_SIZE, IMAGENET_MEAN, IMAGENET_STD
from eqbench.backbones.timm_encoder import CURATED_TIMM_MODELS
from eqbench.errors import EqbenchError

CNNS = {"resnet18", "resnet50"}


def _input_size(name: str) -> int:
    return 64 if name in CNNS else 32


def test_registry_lists_curated_backbones() -> None:
    names = set(BACKBONES.names())
    expected = {*CURATED_TIMM_MODELS, "micro_vit", "pixels"}
    assert expected <= names
    assert {"vit_small_patch8", "vit_base_patch8", "vit_large_patch16"} <= names


@pytest.mark.parametrize("name", BACKBONES.names())
def test_feature_shapes_every_backbone(name: str) -> None:
    """Shapes on the meta device: no weights are initialised, so even ViT-L is instant."""
    size = _input_size(name)
    with torch.device("meta"):
        enc = create_encoder(name, img_size=size)
        feats = enc(torch.empty(2, 3, size, size))
    h, w = feats.grid
    assert (h, w) == (size // enc.patch_size, size // enc.patch_size)
    assert feats.patch.shape == (2, h * w, enc.embed_dim)
    if name == "pixels":
        assert feats.cls is not None and feats.cls.shape == (2, 3 * h * w)
        return
    if enc.has_cls:
        assert feats.cls is not None and feats.cls.shape == (2, enc.embed_dim)
    else:
        assert feats.cls is None
    for kind in FEATURE_KINDS:
        width = {"cls+avgpool": 2, "grid": GRID_SIZE * GRID_SIZE}.get(kind, 1) * enc.embed_dim
        assert feats.pooled(kind).shape == (2, width)


@pytest.mark.parametrize(
    ("name", "timm_name", "embed_dim", "patch", "has_cls"),
    [
        ("vit_tiny_patch16", "vit_tiny_patch16_224", 192, 16, True),
        ("vit_small_patch16", "vit_small_patch16_224", 384, 16, True),
        ("vit_base_patch16", "vit_base_patch16_224", 768, 16, True),
        ("vit_large_patch16", "vit_large_patch16_224", 1024, 16, True),
        ("vit_small_patch8", "vit_small_patch8_224", 384, 8, True),
        ("vit_base_patch8", "vit_base_patch8_224", 768, 8, True),
        ("resnet18", "resnet18", 512, 32, False),
        ("resnet50", "resnet50", 2048, 32, False),
        ("micro_vit", "vit_tiny_patch16_224", 64, 16, True),
    ],
)
def test_architecture_attributes(
    name: str, timm_name: str, embed_dim: int, patch: int, has_cls: bool
) -> None:
    with torch.device("meta"):
        enc = create_encoder(name, img_size=32)
    assert isinstance(enc, TimmEncoder)
    assert (enc.timm_name, enc.embed_dim, enc.patch_size, enc.has_cls) == (
        timm_name,
        embed_dim,
        patch,
        has_cls,
    )


def _oracle(enc: TimmEncoder, x: torch.Tensor, mean: Any, std: Any) -> tuple[Any, torch.Tensor]:
    """(cls, patch) from an independently built timm model carrying the encoder's weights."""
    desc = enc.describe()
    kwargs = {k: v for k, v in desc["kwargs"].items() if k not in ("mean", "std")}
    if enc.is_token_model:
        kwargs.update(dynamic_img_size=True)
    else:
        kwargs.pop("img_size")
    ref: Any = timm.create_model(enc.timm_name, pretrained=False, num_classes=0, **kwargs)
    ref.load_state_dict(enc.model.state_dict())
    ref.eval()
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = ref.forward_features(xn)
    if out.ndim == 4:
        return None, out.flatten(2).transpose(1, 2)
    prefix = ref.num_prefix_tokens
    return (out[:, 0] if ref.cls_token is not None else None), out[:, prefix:]


@pytest.mark.parametrize(
    ("name", "kwargs", "hw", "mean", "std"),
    [
        ("micro_vit", {"patch_size": 8}, (32, 32), IMAGENET_MEAN, IMAGENET_STD),
        ("micro_vit", {"patch_size": 8}, (48, 32), IMAGENET_MEAN, IMAGENET_STD),
        ("micro_vit", {"patch_size": 16}, (64, 48), IMAGENET_MEAN, IMAGENET_STD),
        ("vit_tiny_patch16", {"depth": 2}, (32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ("vit_tiny_patch16", {"depth": 3}, (32, 48), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ("resnet18", {}, (64, 96), IMAGENET_MEAN, IMAGENET_STD),
    ],
)
def test_timm_encoder_matches_timm_forward_features(
    name: str, kwargs: dict[str, Any], hw: tuple[int, int], mean: Any, std: Any
) -> None:
    torch.manual_seed(0)
    enc = create_encoder(name, img_size=32, **kwargs)
    assert isinstance(enc, TimmEncoder)
    enc.eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        feats = enc(x)
    cls, patch = _oracle(enc, x, mean, std)
    torch.testing.assert_close(feats.patch, patch, rtol=1e-5, atol=1e-5)
    if cls is None:
        assert feats.cls is None
    else:
        assert feats.cls is not None
        torch.testing.assert_close(feats.cls, cls, rtol=1e-5, atol=1e-5)
    assert feats.grid == (hw[0] // enc.patch_size, hw[1] // enc.patch_size)


def test_register_tokens_are_skipped_and_avgpool_models_have_no_cls() -> None:
    torch.manual_seed(0)
    enc = create_encoder("micro_vit", img_size=32, patch_size=8, reg_tokens=3)
    assert isinstance(enc, TimmEncoder)
    assert enc.num_prefix_tokens == 4
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        tokens = enc.model.forward_features(enc.normalize(x))
        feats = enc(x)
    assert tokens.shape[1] == 4 + 16
    assert feats.cls is not None
    torch.testing.assert_close(feats.cls, tokens[:, 0])
    torch.testing.assert_close(feats.patch, tokens[:, 4:])

    gap = create_encoder("micro_vit", img_size=32, class_token=False, global_pool="avg")
    assert not gap.has_cls
    feats = gap(torch.rand(2, 3, 32, 32))
    assert feats.cls is None and feats.patch.shape == (2, 4, 64)
    torch.testing.assert_close(feats.pooled("cls"), feats.patch.mean(1))


def test_describe_rebuilds_same_architecture() -> None:
    enc = create_encoder("micro_vit", img_size=48, patch_size=8, depth=3)
    desc = enc.describe()
    assert desc["name"] == "micro_vit"
    assert desc["kwargs"]["depth"] == 3 and desc["kwargs"]["img_size"] == 48
    rebuilt = create_encoder(desc["name"], **desc["kwargs"])
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    enc.eval()
    rebuilt.eval()
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(enc(x).patch, rebuilt(x).patch)
    assert rebuilt.describe() == desc


def test_any_timm_name_and_pretrained_tag() -> None:
    with torch.device("meta"):
        enc = create_encoder("vit_small_patch16_224.dino", img_size=32)
        default = create_encoder("vit_small_patch16", img_size=32)
    assert isinstance(enc, TimmEncoder) and isinstance(default, TimmEncoder)
    assert enc.describe()["name"] == "vit_small_patch16_224.dino"
    # The .dino tag's preprocessing config is ImageNet mean/std, unlike the default tag
    # (the oracle test above checks that the encoder normalises with its model's config).
    assert tuple(enc.model.pretrained_cfg["mean"]) == pytest.approx(IMAGENET_MEAN)
    assert tuple(default.model.pretrained_cfg["mean"]) == pytest.approx((0.5, 0.5, 0.5))


def test_unknown_backbone_suggests_a_name() -> None:
    with pytest.raises(EqbenchError, match="Did you mean 'vit_small_patch16'"):
        create_encoder("vit_smal_patch16")
    with pytest.raises(EqbenchError, match="Unknown backbone 'no_such_net_xyz'"):
        create_encoder("no_such_net_xyz")


def test_pixel_encoder_equals_manual_downsample() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    enc = create_encoder("pixels", img_size=64)
    assert isinstance(enc, PixelEncoder)
    feats = enc(x)
    manual = x.reshape(2, 3, 16, 4, 16, 4).mean(dim=(3, 5))  # 4x4 block means, (2, 3, 16, 16)
    assert feats.grid == (16, 16)
    assert feats.cls is not None
    torch.testing.assert_close(feats.cls, manual.flatten(1))
    torch.testing.assert_close(feats.patch, manual.permute(0, 2, 3, 1).reshape(2, 256, 3))
    assert feats.pooled("avgpool").shape == (2, 3)
    assert len(list(enc.parameters())) == 0 and enc.state_dict() == {}

    small = PixelEncoder(img_size=32, grid=4)
    f4 = small(x[:, :, :32, :32])
    manual4 = x[:, :, :32, :32].reshape(2, 3, 4, 8, 4, 8).mean(dim=(3, 5))
    torch.testing.assert_close(f4.patch, manual4.flatten(2).transpose(1, 2))
    assert small.describe() == {"name": "pixels", "kwargs": {"img_size": 32, "grid": 4}}


def test_encoder_is_an_encoder() -> None:
    enc = create_encoder("micro_vit", img_size=32)
    assert isinstance(enc, Encoder)
    assert sum(p.numel() for p in enc.parameters()) < 200_000
