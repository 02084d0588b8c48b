"""The ImageNet recipes crop their views from the full image, as torchvision's RandomResizedCrop
does in the reference code, not from a centre square."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eqbench.data import load_dataset
from eqbench.methods import TrainBatch, build_method
from eqbench.methods.augment import AugmentConfig, TwoViewAugment, source_aspect
from eqbench.train import available_configs, load_pretrain_config
from eqbench.train.data import TrainData

#: A 2:1 photo whose left fifth is red, bottom fifth blue and the rest grey: its centre square
#: holds no red.
WIDE = np.full((40, 80, 3), 128, dtype=np.uint8)
WIDE[:, :16] = (255, 0, 0)
WIDE[32:] = (0, 0, 255)


def wide_folder(tmp_path: Path) -> Path:
    for split in ("train", "val"):
        folder = tmp_path / split / "a"
        folder.mkdir(parents=True)
        Image.fromarray(WIDE).save(folder / "wide.png")
    return tmp_path


def redness(images: torch.Tensor) -> float:
    """Share of pixels that are clearly red, ``images`` ``(B, 3, H, W)`` uint8 or in [0, 1]."""
    x = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
    return float(((x[:, 0] > 0.8) & (x[:, 1] < 0.2)).float().mean())


def test_whole_images_keep_their_edges_and_aspect(tmp_path: Path) -> None:
    dataset = load_dataset(f"imagefolder:{wide_folder(tmp_path)}", "train")
    assert redness(dataset.load([0], 32)) == 0.0  # the centre square
    whole, aspect = dataset.load_whole([0], 32)
    assert whole.shape == (1, 3, 32, 32) and aspect.tolist() == [2.0]
    assert redness(whole) == pytest.approx(0.16, abs=0.03)
    for preload in (0, 64):  # streamed and preloaded
        data = TrainData(dataset, 32, seed=0, global_batch=2, preload_max_mb=preload, whole=True)
        images, batch_aspect = next(iter(data.batches(0, 1)))
        assert batch_aspect is not None and batch_aspect.tolist() == [2.0, 2.0]
        assert redness(images) == pytest.approx(0.16, abs=0.03)


def test_crops_follow_torchvision_on_the_source_image() -> None:
    augment = TwoViewAugment(AugmentConfig(crop_scale=(0.1, 0.6)), 16)
    aspect = torch.full((2000,), 2.0)
    with source_aspect(aspect):
        box, _ = augment.crop_boxes(2000, torch.Generator().manual_seed(0))
    width, height = box[:, 2], box[:, 3]  # fractions of the source's width and height
    inside = (width < 1) & (height < 1)
    assert float(inside.float().mean()) > 0.7  # the rest is clamped to the image's height
    area = (width * height)[inside]  # fraction of the source's area
    assert float(area.min()) >= 0.1 - 1e-9 and float(area.max()) <= 0.6 + 1e-9
    pixel_ratio = (width * 2.0 / height)[inside]  # width / height in the source's pixels
    assert float(pixel_ratio.min()) >= 3 / 4 - 1e-9 and float(pixel_ratio.max()) <= 4 / 3 + 1e-9
    with pytest.raises(ValueError, match="source aspect"), source_aspect(aspect[:3]):
        augment.crop_boxes(2, torch.Generator())


def test_a_method_crops_the_whole_source_it_is_given() -> None:
    x = torch.from_numpy(WIDE).permute(2, 0, 1).unsqueeze(0).repeat(4, 1, 1, 1)
    squashed = torch.nn.functional.interpolate(x.float(), size=(32, 32), mode="area").byte()
    # the whole image at its own aspect ratio: area 1, ratio 2 in the source's pixels
    whole = {"crop_scale": [1.0, 1.0], "crop_ratio": [2.0, 2.0], "flip_p": 0.0, "jitter_p": 0.0}
    whole |= {"grayscale_p": 0.0, "blur_p": [0.0, 0.0], "solarize_p": [0.0, 0.0]}
    from eqbench.backbones import create_encoder

    method = build_method(
        "vicreg",
        create_encoder("micro_vit", img_size=32),
        32,
        {"expander_dims": [8, 8], "augment": whole},
    )
    seen: list[torch.Tensor] = []
    original = method.augment.__call__  # type: ignore[union-attr, operator]

    def spy(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = original(images, generator)
        seen.append(v1)
        return v1, v2

    method.augment = spy  # type: ignore[assignment]
    aspect = torch.full((4,), 2.0)
    method(TrainBatch(squashed, torch.Generator().manual_seed(0), aspect=aspect))
    method(TrainBatch(squashed, torch.Generator().manual_seed(0)))
    with_aspect, without = seen
    # the whole source: its red edge and blue bottom are kept
    assert torch.allclose(with_aspect, squashed.float() / 255, atol=0.02)
    assert redness(with_aspect) == pytest.approx(0.16, abs=0.03)
    # without the aspect, ratio 2 is read in the squashed square: a band of height 1/√2
    assert not torch.allclose(without, with_aspect, atol=0.02)


@pytest.mark.parametrize("name", [n for n in available_configs() if n.endswith("_imagenet")])
def test_imagenet_recipes_crop_from_the_full_image(name: str) -> None:
    assert load_pretrain_config(name).full_image
