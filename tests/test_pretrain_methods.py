"""Every registered pretraining method trains on micro_vit at 32 px; augmentations are exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from eqbench.backbones import Encoder, create_encoder
from eqbench.errors import ConfigError, EqbenchError
from eqbench.methods import (
    METHODS,
    OBJECTIVES,
    AugmentConfig,
    TrainBatch,
    TwoViewAugment,
    build_method,
)

IMG = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def small_options(name: str) -> dict[str, Any]:
    """The method's registered test options (small heads: it trains in well under a second)."""
    return dict(METHODS.get(name).test_options)


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (B, 3, 32, 32), so crops and blur change them visibly."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    return (torch.nn.functional.interpolate(coarse, size=IMG, mode="bilinear") * 255).byte()


def build(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    encoder = create_encoder("micro_vit", img_size=IMG)
    return build_method(name, encoder, IMG, {**small_options(name), **options})


def test_registry_has_base_and_tir_methods() -> None:
    expected = {"simclr", "vicreg", "dino", "ibot", "dinov2"}
    assert expected | {f"tir+{name}" for name in expected} <= set(METHODS.names())
    assert {"essl", "augself", "equimod", "sie", "mae", "gtsa"} <= set(METHODS.names())
    # every two-view objective has its tir+ variant, resolved by the registry
    assert {f"tir+{name}" for name in OBJECTIVES.names()} <= set(METHODS.names())


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_registers_its_paper_and_a_description(name: str) -> None:
    entry = METHODS.get(name)
    assert "arXiv" in entry.paper and entry.description
    assert "\n" not in entry.paper + entry.description


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_two_steps(name: str) -> None:
    method = build(name)
    assert isinstance(method.encoder, Encoder)
    assert method.name == name
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    batch = images()
    losses = []
    for step in range(2):
        out = method.training_step(TrainBatch(batch, torch.Generator().manual_seed(step)))
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        assert all(v.ndim == 0 for v in out.values())
        optimizer.zero_grad()
        out["loss"].backward()
        if step == 0 and not method.has_unused_parameters:
            # Every trainable parameter gets a gradient (DistributedDataParallel relies on it);
            # an EMA teacher's parameters are frozen.
            missing = [
                n for n, p in method.named_parameters() if p.requires_grad and p.grad is None
            ]
            assert missing == []
        optimizer.step()
        losses.append(out["loss"].item())
    changed = [k for k, v in method.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert "model.patch_embed.proj.weight" in changed
    assert losses[0] != losses[1]


@pytest.mark.parametrize("name", METHODS.names())
def test_trained_feature_is_the_pooling_the_losses_see(name: str) -> None:
    expected = {"dino": "cls", "ibot": "cls", "dinov2": "cls", "mae": None}.get(name, "avgpool")
    assert build(name).trained_feature == expected
    if name in ("vicreg", "essl", "sie", "dino"):
        assert build(name, pool="cls" if expected == "avgpool" else "avgpool").trained_feature == (
            "cls" if expected == "avgpool" else "avgpool"
        )


@pytest.mark.parametrize("name", ["vicreg", "tir+simclr"])
def test_training_step_is_a_function_of_the_generator_seed(name: str) -> None:
    method = build(name)
    method.eval()  # BatchNorm running stats must not change between the calls
    batch = images()
    with torch.no_grad():
        a = method.training_step(TrainBatch(batch, torch.Generator().manual_seed(5)))
        b = method.training_step(TrainBatch(batch, torch.Generator().manual_seed(5)))
        c = method.training_step(TrainBatch(batch, torch.Generator().manual_seed(6)))
    assert a["loss"].item() == b["loss"].item()
    assert a["loss"].item() != c["loss"].item()


def test_unknown_method_and_options_suggest_names() -> None:
    with pytest.raises(EqbenchError, match="Did you mean 'vicreg'"):
        build("vicrg")
    with pytest.raises(ConfigError, match="Did you mean 'expander_dims'"):
        build("vicreg", expander_dim=[8, 8])
    with pytest.raises(ConfigError, match="pool"):
        build("simclr", pool="max")


def test_simclr_uses_its_own_augment_defaults() -> None:
    assert build("simclr").options["augment"]["brightness"] == 0.8
    assert build("vicreg").options["augment"]["brightness"] == 0.4
    assert build("tir+simclr").options["augment"]["saturation"] == 0.8


# ------------------------------------------------------------------------------ augmentations
IDENTITY = {
    "crop_scale": [1.0, 1.0],
    "crop_ratio": [1.0, 1.0],
    "flip_p": 0.0,
    "jitter_p": 0.0,
    "grayscale_p": 0.0,
    "blur_p": [0.0, 0.0],
    "solarize_p": [0.0, 0.0],
}


def test_augment_with_everything_off_is_the_identity() -> None:
    x = images()
    augment = TwoViewAugment(AugmentConfig(**IDENTITY), IMG)  # type: ignore[arg-type]
    v1, v2 = augment(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v1, x.float() / 255, atol=1e-5, rtol=0)
    torch.testing.assert_close(v2, x.float() / 255, atol=1e-5, rtol=0)


def test_augment_flip_and_solarise_are_exact() -> None:
    x = images()
    flip = TwoViewAugment(AugmentConfig(**{**IDENTITY, "flip_p": 1.0}), IMG)  # type: ignore[arg-type]
    v1, _ = flip(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v1, x.float().flip(-1) / 255, atol=1e-5, rtol=0)
    options = {**IDENTITY, "solarize_p": [0.0, 1.0]}
    solarise = TwoViewAugment(AugmentConfig(**options), IMG)  # type: ignore[arg-type]
    v1, v2 = solarise(x, torch.Generator().manual_seed(0))
    xf = x.float() / 255
    torch.testing.assert_close(v1, xf, atol=1e-5, rtol=0)
    torch.testing.assert_close(v2, torch.where(xf >= 0.5, 1 - xf, xf), atol=1e-5, rtol=0)


def test_augment_views_are_seeded_and_vary() -> None:
    x = images()
    augment = TwoViewAugment(AugmentConfig(), IMG)
    a1, a2 = augment(x, torch.Generator().manual_seed(1))
    b1, b2 = augment(x, torch.Generator().manual_seed(1))
    c1, _ = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)
    assert not torch.equal(a1, a2)
    assert a1.shape == (8, 3, IMG, IMG)
    assert float(a1.min()) >= 0.0 and float(a1.max()) <= 1.0


def test_augment_output_size_differs_from_input_size() -> None:
    x = torch.full((2, 3, 48, 48), 128, dtype=torch.uint8)
    v1, v2 = TwoViewAugment(AugmentConfig(**IDENTITY), IMG)(x, torch.Generator())  # type: ignore[arg-type]
    assert v1.shape == v2.shape == (2, 3, IMG, IMG)
    torch.testing.assert_close(v1, torch.full_like(v1, 128 / 255))


def test_augment_rejects_bad_probabilities() -> None:
    with pytest.raises(ConfigError, match="probabilities"):
        AugmentConfig(flip_p=1.5)
