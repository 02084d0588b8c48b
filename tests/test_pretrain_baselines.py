"""Augmentation parameters and the equivariant / reconstruction baselines (E-SSL, AugSelf,
EquiMod, SIE, MAE): their losses against hand-computed values or references written here."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from eqbench.methods.augment import (
    SIMCLR_AUGMENT,
    VIEW_PARAM_COLUMNS,
    AugmentConfig,
    LocalCropConfig,
    MultiCropAugment,
    TwoViewAugment,
    build_augment_config,
)
from eqbench.transforms import build_transform

IMG = 32


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Micro models gain nothing from threads, and threads slow them badly on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_images(n: int = 6, side: int = 40, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, side, side, generator=gen) * 255).byte()


def checksums(t: torch.Tensor) -> tuple[float, float]:
    flat = t.double().flatten()
    weights = torch.arange(flat.numel(), dtype=torch.float64).remainder(7)
    return float(flat.sum()), float((flat * weights).sum())


# ------------------------------------------------------------------ augmentation parameters
#: Checksums of the views made by augment.py *before* it returned parameters (commit 256362c):
#: returning them must not change a single random draw. Last entry: the generator's next draws.
BEFORE_PARAMS = {
    "vicreg": [(7585.01570597128, 22721.33569574799), (7919.885475836752, 23721.368617661064)],
    "simclr": [(6011.408115183672, 18008.814209541335), (9209.179805961776, 27618.051371347057)],
    "multi": [
        (9885.629993502916, 29606.63079706429),
        (8632.178526213393, 25887.721779838204),
        (2403.178268500138, 7253.936440308578),
        (2251.3985988256754, 6783.251439827494),
    ],
}
NEXT_DRAWS = {
    "vicreg": 1.3696183562278748,
    "simclr": 1.3696183562278748,
    "multi": 1.5593410730361938,
}


@pytest.mark.parametrize("name", ["vicreg", "simclr"])
def test_views_are_unchanged_by_the_parameter_api(name: str) -> None:
    x = random_images()
    defaults = SIMCLR_AUGMENT if name == "simclr" else None
    augment = TwoViewAugment(build_augment_config({}, defaults), IMG)
    gen = torch.Generator().manual_seed(3)
    views = augment(x, gen)
    state = gen.get_state()
    for view, expected in zip(views, BEFORE_PARAMS[name], strict=True):
        assert checksums(view) == pytest.approx(expected, rel=1e-9)
    assert float(torch.rand(3, generator=gen).sum()) == pytest.approx(NEXT_DRAWS[name], rel=1e-7)
    # with_params: the very same views and the generator left in the very same state
    gen2 = torch.Generator().manual_seed(3)
    v1, v2, p1, _p2 = augment.with_params(x, gen2)
    assert torch.equal(v1, views[0]) and torch.equal(v2, views[1])
    assert torch.equal(state, gen2.get_state())
    assert p1.as_tensor().shape == (6, len(VIEW_PARAM_COLUMNS))


def test_multicrop_views_are_unchanged_by_the_parameter_api() -> None:
    x = random_images()
    augment = MultiCropAugment(AugmentConfig(), LocalCropConfig(n_local=2), IMG, 16)
    gen = torch.Generator().manual_seed(4)
    views = [*augment(x, gen), *augment.local_crops(x, gen)]
    for view, expected in zip(views, BEFORE_PARAMS["multi"], strict=True):
        assert checksums(view) == pytest.approx(expected, rel=1e-9)
    assert float(torch.rand(3, generator=gen).sum()) == pytest.approx(NEXT_DRAWS["multi"], rel=1e-7)


OFF = {
    "flip_p": 0.0,
    "jitter_p": 0.0,
    "grayscale_p": 0.0,
    "blur_p": [0.0, 0.0],
    "solarize_p": [0.0, 0.0],
}


def test_crop_params_reproduce_the_view() -> None:
    """Re-cropping the input with the returned box (and flip) gives the view back."""
    x = random_images().float() / 255
    augment = TwoViewAugment(build_augment_config({**OFF, "flip_p": 0.5}), IMG)
    view, params = augment.view_with_params(x, 0, torch.Generator().manual_seed(0))
    x0, y0, w, h = params.crop.double().unbind(dim=1)
    assert bool((x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-9).all())
    assert bool((y0 + h <= 1 + 1e-9).all())
    theta = torch.zeros(6, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = torch.where(params.flip, -w, w)
    theta[:, 0, 2] = 2 * (x0 + w / 2) - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * (y0 + h / 2) - 1
    grid = F.affine_grid(theta.float(), [6, 3, IMG, IMG], align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(view, expected, atol=1e-5, rtol=0)
    assert not params.jitter.any() and not params.grayscale.any()
    assert not params.blur_sigma.any() and not params.solarize.any()
    assert not params.rotation.any()


def test_identity_crop_and_jitter_params() -> None:
    """Full-image crop: box (0, 0, 1, 1); jitter p 1: re-applying the offsets reproduces it;
    blur p 1: σ is reported at 224 px."""
    x = random_images().float() / 255
    options = {**OFF, "crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "jitter_p": 1.0}
    augment = TwoViewAugment(build_augment_config(options), IMG)
    view, params = augment.view_with_params(x, 0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(params.crop, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(6, 4))
    resized = F.interpolate(x, size=IMG, mode="bilinear", align_corners=False)
    jitter = build_transform("colour", IMG)
    torch.testing.assert_close(view, jitter.apply(resized, params.jitter), atol=1e-5, rtol=0)
    assert bool(
        (params.jitter[:, :3].abs() <= 0.4).all() and (params.jitter[:, 3].abs() <= 0.1).all()
    )
    blurred = TwoViewAugment(build_augment_config({**OFF, "blur_p": [1.0, 1.0]}), IMG)
    _, p = blurred.view_with_params(x, 0, torch.Generator().manual_seed(1))
    assert bool((p.blur_sigma >= 0.1 - 1e-6).all() and (p.blur_sigma <= 2.0 + 1e-6).all())
    rotated = p.rotated(torch.full((6,), 30.0))
    assert rotated.as_tensor()[:, VIEW_PARAM_COLUMNS.index("rotation")].tolist() == [30.0] * 6
    assert math.isclose(float(p.rotation.sum()), 0.0)
