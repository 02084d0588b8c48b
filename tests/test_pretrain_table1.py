"""The paper's "rot" augmentation setting and the shipped configs of its Table 1 rows
(Wang et al., AAAI-26, arXiv 2503.18753: Ours(VICReg, A, g))."""

from __future__ import annotations

import pytest
import torch

from eqbench.backbones import create_encoder
from eqbench.errors import ConfigError
from eqbench.methods import TrainBatch, build_method
from eqbench.methods.augment import (
    AugmentConfig,
    LocalCropConfig,
    MultiCropAugment,
    TwoViewAugment,
    build_augment_config,
)
from eqbench.train import available_configs, load_pretrain_config
from eqbench.transforms import build_transform

IMG = 32

#: (A1/A2 preset, transformation g) of each Table 1 row, by config name.
TABLE1 = {
    "tir_vicreg_rot_rot_photos_cpu": ("rot", "rotation"),
    "tir_vicreg_all_rot_photos_cpu": ("all", "rotation"),
    "tir_vicreg_all_colour_photos_cpu": ("all", "colour"),
    "tir_vicreg_all_blur_photos_cpu": ("all", "blur"),
    "tir_vicreg_all_translation_photos_cpu": ("all", "translation"),
    "tir_vicreg_all_se2_photos_cpu": ("all", "se2"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 4, side: int = IMG) -> torch.Tensor:
    return (torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0)) * 255).byte()


def test_rot_preset_is_a_rotation_of_the_whole_image_only() -> None:
    augment = TwoViewAugment(build_augment_config({"preset": "rot"}), IMG)
    x = images()
    gen = torch.Generator().manual_seed(1)
    v1, v2, p1, p2 = augment.with_params(x, gen)
    # the same draws by hand: one angle per image and view, uniform in [-45, 45]
    rotation = build_transform("rotation", IMG, degrees=[-45, 45])
    ref = torch.Generator().manual_seed(1)
    a1, a2 = rotation.sample(4, ref), rotation.sample(4, ref)
    unit = x.float() / 255.0
    torch.testing.assert_close(v1, rotation.apply(unit, a1))
    torch.testing.assert_close(v2, rotation.apply(unit, a2))
    torch.testing.assert_close(p1.rotation, a1[:, 0].float())
    assert torch.equal(gen.get_state(), ref.get_state())
    # no crop, flip, colour, blur or solarisation
    assert torch.equal(p2.crop, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(4, 4))
    assert not (p1.flip.any() or p1.grayscale.any() or p1.solarize.any())
    assert float(p1.jitter.abs().sum() + p1.blur_sigma.abs().sum()) == 0.0
    assert float(p1.rotation.abs().max()) <= 45.0
    assert float((p1.rotation - p2.rotation).abs().max()) > 0


def test_rot_preset_resizes_a_larger_image_whole() -> None:
    augment = TwoViewAugment(AugmentConfig(preset="rot", rotation_degrees=(0.0, 0.0)), 16)
    x = torch.zeros(2, 3, IMG, IMG, dtype=torch.uint8)
    x[:, :, :, : IMG // 2] = 255  # left half white: a crop would not keep exactly half
    view, _ = augment(x, torch.Generator().manual_seed(0))
    assert view.shape == (2, 3, 16, 16)
    # the whole image, resized: half white (antialiasing softens only the two middle columns)
    assert float(view[..., :7].min()) == pytest.approx(1.0) and float(view[..., 9:].max()) == 0.0
    assert float(view.mean()) == pytest.approx(0.5, abs=1e-6)


def test_presets_are_checked() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'rot'"):
        AugmentConfig(preset="rott")
    with pytest.raises(ConfigError, match="preset: all"):
        MultiCropAugment(AugmentConfig(preset="rot"), LocalCropConfig(), 64, 16)


def test_a_null_transform_option_drops_the_inherited_one() -> None:
    colour = build_transform("colour", IMG, degrees=None, hue=[-0.05, 0.05])
    assert colour.config()["hue"] == [-0.05, 0.05]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="degrees"):
        build_transform("colour", IMG, degrees=[-45, 45])


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_table1_configs_ship_and_train(name: str) -> None:
    assert name in available_configs()
    cfg = load_pretrain_config(name)
    preset, transform = TABLE1[name]
    assert cfg.method == "tir+vicreg"
    assert cfg.method_options["augment"]["preset"] == preset
    assert cfg.method_options["transform"] == transform
    # everything else is tir_vicreg_photos_cpu's
    base = load_pretrain_config("tir_vicreg_photos_cpu")
    assert {k: v for k, v in cfg.to_dict().items() if k != "method_options"} == {
        k: v for k, v in base.to_dict().items() if k != "method_options"
    }
    encoder = create_encoder("micro_vit", img_size=IMG)
    options = {**cfg.method_options, "expander_dims": [16, 16], "d_patch": 32, "d_equi": 16}
    method = build_method(cfg.method, encoder, IMG, options)
    assert method.options["augment"]["preset"] == preset
    losses = method.training_step(TrainBatch(images(), torch.Generator().manual_seed(0)))
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
