"""Known answers of the synthetic probes, on the built-in photos.

* raw pixels keep the rotation: R² well above a constant encoder, which scores ≤ 0;
* an encoder made rotation-invariant here scores rotation R² ≈ 0 and four-fold rotation ≈ chance;
* the identity on pixels recovers the four-fold rotation with accuracy ≈ 1.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor

from eqbench.backbones.base import Encoder, Features
from eqbench.backbones.pixels import PixelEncoder
from eqbench.checkpoints import LoadedModel
from eqbench.data.base import DatasetSpec
from eqbench.dataclass_dicts import from_dict
from eqbench.features.store import FeatureStore
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.run import resolve_feature
from eqbench.tasks import all_tasks

SMALL = {"n_train": 4000, "n_test": 1000, "image_size": 32, "probe_seeds": 1}


class ConstantEncoder(Encoder):
    """Ignores its input."""

    arch = "constant"
    embed_dim = 8
    patch_size = 16
    has_cls = False

    def forward_tokens(self, x: Tensor) -> Features:
        return Features(cls=None, patch=torch.ones(x.shape[0], 4, 8), grid=(2, 2))


class RadialEncoder(Encoder):
    """Mean colour in rings about the centre, inside the inscribed disc: invariant to rotations
    about the centre (exactly so to multiples of 90°)."""

    arch = "radial"
    embed_dim = 3
    patch_size = 1
    has_cls = False

    def __init__(self, rings: int = 8) -> None:
        super().__init__(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.rings = rings

    def forward_tokens(self, x: Tensor) -> Features:
        s = x.shape[-1]
        c = (s - 1) / 2
        yy, xx = torch.meshgrid(torch.arange(s) - c, torch.arange(s) - c, indexing="ij")
        r = torch.sqrt(xx**2 + yy**2) / (s / 2)
        ring = torch.floor(r * self.rings).long()
        tokens = []
        for i in range(self.rings):
            mask = (ring == i).float()
            tokens.append((x * mask).sum(dim=(2, 3)) / mask.sum())
        patch = torch.stack(tokens, dim=1)  # (B, rings, 3)
        return Features(cls=None, patch=patch, grid=(self.rings, 1))

    def forward(self, images: Tensor) -> Features:  # type: ignore[override]
        return self.forward_tokens(images)


def run_task(encoder: Encoder, task: str, **extra: object) -> dict[str, list[float]]:
    spec = all_tasks()[task]
    protocol = PROTOCOLS.get(spec.protocol)
    fields = {f.name for f in dataclasses.fields(protocol.Config)}
    small = {k: v for k, v in SMALL.items() if k in fields}
    cfg = from_dict(protocol.Config, {**spec.config, **small, **extra}, task)
    model = LoadedModel(
        model_id=encoder.arch, sha256=encoder.arch * 4, encoder=encoder, spec=encoder.arch, info={}
    )
    cfg = resolve_feature(cfg, model)  # feature: auto → cls here (not an eqbench checkpoint)
    store = FeatureStore(encoder, model.sha256, torch.device("cpu"), None, show_progress=False)
    ctx = EvalContext(model=model, store=store, dataset=DatasetSpec("photos"), seed=0)
    return protocol().run(cfg, ctx)


def test_radial_encoder_is_rotation_invariant() -> None:
    enc = RadialEncoder()
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(enc(x).pooled(), enc(torch.rot90(x, 1, (2, 3))).pooled(), atol=1e-6)


def test_pixels_keep_rotation_constant_encoder_does_not() -> None:
    pixels = run_task(PixelEncoder(img_size=32, grid=8), "synthetic/rotation")
    const = run_task(ConstantEncoder(), "synthetic/rotation")
    assert const["r2_mlp"][0] <= 0.0 and const["r2_linear"][0] <= 0.0
    assert not math.isnan(const["r2_mlp"][0])
    assert pixels["r2_mlp"][0] > 0.3, pixels
    assert pixels["r2_mlp"][0] > const["r2_mlp"][0] + 0.3


def test_invariant_encoder_loses_rotation() -> None:
    radial = RadialEncoder()
    rot = run_task(radial, "synthetic/rotation")
    assert abs(rot["r2_mlp"][0]) < 0.1 and rot["r2_linear"][0] < 0.1, rot
    rot4 = run_task(radial, "synthetic/rotation4")
    assert abs(rot4["acc_mlp"][0] - 0.25) < 0.07, rot4
    assert abs(rot4["acc_linear"][0] - 0.25) < 0.07, rot4


def test_pixels_recover_four_fold_rotation() -> None:
    rot4 = run_task(PixelEncoder(img_size=32, grid=8), "synthetic/rotation4")
    assert rot4["acc_mlp"][0] > 0.9, rot4
    assert rot4["chance"][0] == pytest.approx(0.25, abs=0.05)


def test_invariance_score_extremes() -> None:
    radial = run_task(RadialEncoder(), "invariance/rotation4")
    assert radial["invariance"][0] == pytest.approx(1.0, abs=1e-5)
    pixels = run_task(PixelEncoder(img_size=32), "invariance/rotation4")
    assert pixels["invariance"][0] < 0.7
