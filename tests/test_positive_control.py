"""The probes' positive control: supervised prediction of the rotation between two views."""

from __future__ import annotations

import pytest
import torch

from eqbench.backbones import create_encoder
from eqbench.data.base import center_crop
from eqbench.errors import ConfigError
from eqbench.methods import TrainBatch, build_method
from eqbench.methods.rotation_supervised import RotationSupervised


def build(**options: object) -> RotationSupervised:
    torch.manual_seed(0)
    method = build_method(
        "rotation_supervised",
        create_encoder("micro_vit", img_size=16),
        16,
        {"head_dims": [16], **options},
    )
    assert isinstance(method, RotationSupervised)
    return method


def context(n: int = 4, side: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    return (torch.nn.functional.interpolate(coarse, size=side, mode="bilinear") * 255).byte()


def test_views_are_centre_crops_of_the_context_and_of_its_rotation() -> None:
    method = build()
    images = context()
    v1, v2, theta = method.views(TrainBatch(images, torch.Generator().manual_seed(5)))
    full = images.float() / 255
    assert torch.equal(v1, center_crop(full, 16))
    rotated = method.transform.apply(full, theta)
    torch.testing.assert_close(v2, center_crop(rotated, 16).clamp(0, 1))
    # the 16 px view of a rotated 32 px context holds no fill pixel (|θ| ≤ 45°)
    assert float(v2.min()) > 0.0
    assert theta.abs().max() <= 45.0 and theta.shape == (4, 1)


def test_targets_are_standardised_and_the_loss_is_their_mse() -> None:
    method = build()
    assert float(method.target_mean.abs().max()) < 1.5  # uniform in [-45, 45]: mean ≈ 0
    assert float(method.target_std[0]) == pytest.approx(90 / 12**0.5, rel=0.05)  # std of U(-45, 45)
    batch = TrainBatch(context(), torch.Generator().manual_seed(1))
    out = method.training_step(batch)
    v1, v2, theta = method.views(TrainBatch(context(), torch.Generator().manual_seed(1)))
    with torch.no_grad():
        f1 = method.encoder(v1).pooled("avgpool")
        f2 = method.encoder(v2).pooled("avgpool")
        prediction = method.head(torch.cat([f1, f2], 1))
    target = (theta - method.target_mean) / method.target_std
    assert out["loss"].item() == pytest.approx(float(((prediction - target) ** 2).mean()), rel=1e-4)


def test_views_larger_than_the_images_are_refused() -> None:
    method = build()
    with pytest.raises(ConfigError, match="load_size"):
        method.views(TrainBatch(context(side=8), torch.Generator()))
    with pytest.raises(ConfigError, match="discrete"):
        build(transform="rotation4", transform_options={})


def test_grid_pool_feeds_the_head_the_probes_grid_feature() -> None:
    method = build(pool="grid")
    assert method.trained_feature == "grid"
    first = method.head[0]
    assert isinstance(first, torch.nn.Linear) and first.in_features == 2 * 4 * 64  # 2 views, 2×2
    out = method.training_step(TrainBatch(context(), torch.Generator().manual_seed(1)))
    assert torch.isfinite(out["loss"])
    with pytest.raises(ConfigError, match="pool"):
        build(pool="max")
