"""Batched two-view augmentations for joint-embedding pretraining, on the training device.

The pipeline of VICReg (Bardes et al., ICLR 2022, arXiv 2105.04906, appendix C; code
``facebookresearch/vicreg/augmentations.py``), which follows BYOL's: random resized crop, random
horizontal flip, colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur (p 1.0 / 0.1 for the
two views) and solarisation (p 0.0 / 0.2). SimCLR (Chen et al., ICML 2020, arXiv 2002.05709)
uses the same steps with stronger jitter (0.8, 0.8, 0.8, 0.2), blur p 0.5 and no solarisation;
see :data:`SIMCLR_AUGMENT`. DINO (Caron et al., ICCV 2021, arXiv 2104.14294) uses the same two
global views (crop scale 0.4–1, :data:`DINO_AUGMENT`) plus ``n_local`` small local crops (scale
0.05–0.4, 96 px at 224, blur p 0.5, no solarisation): :class:`MultiCropAugment`.

Every parameter is drawn from the step's CPU ``torch.Generator`` in a fixed order, whatever the
probabilities, so a step's views are a pure function of its generator seed. Differences from
torchvision, all **eqbench defaults**:

* crop: the area fraction and log aspect ratio are drawn once and the box sides clamped to the
  image (torchvision retries ten times, then falls back to a centre crop); the crop and flip are
  one bilinear :func:`~torch.nn.functional.grid_sample` from the loaded image;
* colour jitter applies brightness → contrast → saturation → hue in that fixed order (eqbench's
  ``colour`` transformation; torchvision shuffles the order per image);
* blur σ is given at 224 px and scaled by ``image_size / 224`` (kernel ``2·ceil(3σ_max) + 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eqbench.config import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.transforms import Transformation, build_transform
from eqbench.transforms.photometric import grayscale

#: Pixel size at which ``blur_sigma`` is given.
REFERENCE_SIZE = 224


@dataclass
class AugmentConfig:
    """Options of :class:`TwoViewAugment`; defaults are VICReg's (arXiv 2105.04906).

    Attributes:
        crop_scale: range of the crop area as a fraction of the image.
        crop_ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        flip_p: probability of a horizontal flip.
        jitter_p: probability of colour jitter.
        brightness: jitter strength: factor ``1 + U[-b, b]``.
        contrast: jitter strength: factor ``1 + U[-c, c]``.
        saturation: jitter strength: factor ``1 + U[-s, s]``.
        hue: jitter strength: hue shift ``U[-h, h]`` turns.
        grayscale_p: probability of converting to grayscale.
        blur_p: probability of Gaussian blur, per view.
        blur_sigma: range of the blur σ in pixels at 224 px.
        solarize_p: probability of solarisation (invert pixels >= 0.5), per view.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self) -> None:
        where = "augment options"
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"{where}: crop_scale must satisfy 0 < low <= high <= 1.")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ConfigError(f"{where}: crop_ratio must satisfy 0 < low <= high.")
        probs = [self.flip_p, self.jitter_p, self.grayscale_p, *self.blur_p, *self.solarize_p]
        if any(not 0 <= p <= 1 for p in probs):
            raise ConfigError(f"{where}: probabilities must lie in [0, 1].")
        if not 0 <= self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"{where}: blur_sigma must satisfy 0 <= low <= high.")


#: SimCLR's augmentations (arXiv 2002.05709, appendix A): jitter strength 1, blur p 0.5.
SIMCLR_AUGMENT: dict[str, Any] = {
    "brightness": 0.8,
    "contrast": 0.8,
    "saturation": 0.8,
    "hue": 0.2,
    "blur_p": [0.5, 0.5],
    "solarize_p": [0.0, 0.0],
}


#: DINO's global crops (arXiv 2104.14294, ``DataAugmentationDINO``): scale 0.4–1, otherwise
#: the BYOL/VICReg pipeline above.
DINO_AUGMENT: dict[str, Any] = {"crop_scale": [0.4, 1.0]}


@dataclass
class LocalCropConfig:
    """The local crops of multi-crop (DINO, arXiv 2104.14294, section 3.1 and its code).

    Attributes:
        n_local: number of local crops per image (DINO: 8 on ImageNet; **eqbench default** 2,
            for CPU runs).
        local_size: side of the local crops in pixels; default ``96/224`` of the global size,
            rounded to a multiple of the patch size (at least one patch).
        local_crop_scale: range of the local crop area (DINO: 0.05–0.4).
        local_blur_p: probability of Gaussian blur on a local crop (DINO: 0.5).
        local_solarize_p: probability of solarisation on a local crop (DINO: 0).
    """

    n_local: int = 2
    local_size: int | None = None
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    local_blur_p: float = 0.5
    local_solarize_p: float = 0.0

    def __post_init__(self) -> None:
        where = "local crop options"
        if self.n_local < 0:
            raise ConfigError(f"{where}: n_local must be >= 0, got {self.n_local}.")
        if self.local_size is not None and self.local_size < 1:
            raise ConfigError(f"{where}: local_size must be >= 1, got {self.local_size}.")
        low, high = self.local_crop_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"{where}: local_crop_scale must satisfy 0 < low <= high <= 1.")
        if not (0 <= self.local_blur_p <= 1 and 0 <= self.local_solarize_p <= 1):
            raise ConfigError(f"{where}: probabilities must lie in [0, 1].")


def default_local_size(image_size: int, patch_size: int) -> int:
    """DINO's 96 px at 224 scaled to ``image_size``, rounded to whole patches (at least one)."""
    patches = round(image_size * 96 / REFERENCE_SIZE / patch_size)
    return max(1, patches) * patch_size


def build_augment_config(
    overrides: dict[str, Any], defaults: dict[str, Any] | None = None
) -> AugmentConfig:
    """:class:`AugmentConfig` from ``defaults`` (a method's) updated with ``overrides``."""
    return from_dict(AugmentConfig, {**(defaults or {}), **overrides}, "augment options")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


class TwoViewAugment:
    """Makes two augmented views of a batch of uint8 images.

    Args:
        config: the augmentation options.
        image_size: side of the output views in pixels.
    """

    def __init__(self, config: AugmentConfig, image_size: int) -> None:
        self.config = config
        self.image_size = image_size
        c = config
        self.jitter = build_transform(
            "colour",
            image_size,
            brightness=[-c.brightness, c.brightness],
            contrast=[-c.contrast, c.contrast],
            saturation=[-c.saturation, c.saturation],
            hue=[-c.hue, c.hue],
        )
        scale = image_size / REFERENCE_SIZE
        self.blur = build_transform(
            "blur", image_size, sigma=[c.blur_sigma[0] * scale, c.blur_sigma[1] * scale]
        )

    def describe(self) -> dict[str, Any]:
        """The resolved options, JSON-able."""
        return to_dict(self.config)

    def crop_theta(
        self,
        n: int,
        generator: torch.Generator,
        crop_scale: tuple[float, float] | None = None,
    ) -> Tensor:
        """``affine_grid`` matrices ``(n, 2, 3)`` for random resized crops with random flips.

        Output coordinate ``x`` (in [-1, 1]) samples the input at ``±w·x + (2·c_x − 1)`` where
        ``w`` is the crop width as a fraction of the image and ``c_x`` its centre in [0, 1].
        ``crop_scale`` overrides the config's area range (local crops).
        """
        c = self.config
        area = _uniform(n, *(crop_scale or c.crop_scale), generator)
        log_ratio = _uniform(n, math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]), generator)
        ratio = torch.exp(log_ratio)
        width = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the image side
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        centre_x = width / 2 + torch.rand(n, generator=generator, dtype=torch.float64) * (1 - width)
        centre_y = height / 2 + torch.rand(n, generator=generator, dtype=torch.float64) * (
            1 - height
        )
        flip = torch.rand(n, generator=generator, dtype=torch.float64) < c.flip_p
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = torch.where(flip, -width, width)
        theta[:, 0, 2] = 2 * centre_x - 1
        theta[:, 1, 1] = height
        theta[:, 1, 2] = 2 * centre_y - 1
        return theta

    def view(self, images: Tensor, index: int, generator: torch.Generator) -> Tensor:
        """One augmented view.

        Args:
            images: ``(B, 3, H, W)`` float images in [0, 1].
            index: 0 or 1, which view's probabilities (blur, solarisation) to use.
            generator: source of every random parameter.

        Returns:
            ``(B, 3, S, S)`` float images in [0, 1], ``S = image_size``.
        """
        c = self.config
        return self.crop(
            images,
            generator,
            size=self.image_size,
            crop_scale=c.crop_scale,
            blur=self.blur,
            blur_p=c.blur_p[index],
            solarize_p=c.solarize_p[index],
        )

    def crop(
        self,
        images: Tensor,
        generator: torch.Generator,
        *,
        size: int,
        crop_scale: tuple[float, float],
        blur: Transformation,
        blur_p: float,
        solarize_p: float,
    ) -> Tensor:
        """A random resized crop of side ``size``, then flip, jitter, grayscale, blur, solarise.

        Draws, in order: the crop and flip, the jitter parameters, four probability draws
        (jitter, grayscale, blur, solarise), the blur σ.

        Returns:
            ``(B, 3, size, size)`` float images in [0, 1].
        """
        c = self.config
        n, device = images.shape[0], images.device
        theta = self.crop_theta(n, generator, crop_scale).to(device=device, dtype=images.dtype)
        grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
        out = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )  # (B, 3, size, size)
        jitter_params = self.jitter.sample(n, generator)
        masks = torch.rand(4, n, generator=generator)  # jitter, grayscale, blur, solarise
        blur_params = blur.sample(n, generator)
        jitter_on = (masks[0] < c.jitter_p).to(device).view(-1, 1, 1, 1)
        out = torch.where(jitter_on, self.jitter.apply(out, jitter_params.to(device)), out)
        gray_on = (masks[1] < c.grayscale_p).to(device).view(-1, 1, 1, 1)
        out = torch.where(gray_on, grayscale(out).expand_as(out), out)
        blur_on = masks[2] < blur_p
        out = blur.apply(out, (blur_params * blur_on.unsqueeze(1)).to(device))  # σ 0: identity
        solarise_on = (masks[3] < solarize_p).to(device).view(-1, 1, 1, 1)
        out = torch.where(solarise_on & (out >= 0.5), 1.0 - out, out)
        return out

    def __call__(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Two views ``(B, 3, S, S)`` of uint8 (or [0, 1] float) ``images`` ``(B, 3, H, W)``."""
        x = to_unit_float(images)
        return self.view(x, 0, generator), self.view(x, 1, generator)


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images → float in [0, 1]; float images are returned as float."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class MultiCropAugment(TwoViewAugment):
    """DINO's multi-crop: the two global views of :class:`TwoViewAugment` plus local crops.

    Args:
        config: the global views' options (and the jitter/grayscale/flip of the local crops).
        local: the local crops' options.
        image_size: side of the global views in pixels.
        patch_size: the backbone's patch size (for the default local crop size).
    """

    def __init__(
        self, config: AugmentConfig, local: LocalCropConfig, image_size: int, patch_size: int
    ) -> None:
        super().__init__(config, image_size)
        self.local = local
        self.local_size = local.local_size or default_local_size(image_size, patch_size)
        scale = self.local_size / REFERENCE_SIZE
        sigma = [config.blur_sigma[0] * scale, config.blur_sigma[1] * scale]
        self.local_blur = build_transform("blur", self.local_size, sigma=sigma)

    def describe(self) -> dict[str, Any]:
        """The resolved options of the global and local crops, JSON-able."""
        return {**to_dict(self.config), **to_dict(self.local), "local_size": self.local_size}

    def local_crops(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """``n_local`` local crops ``(B, 3, s, s)`` of uint8 or [0, 1] ``images``."""
        x = to_unit_float(images)
        return [
            self.crop(
                x,
                generator,
                size=self.local_size,
                crop_scale=self.local.local_crop_scale,
                blur=self.local_blur,
                blur_p=self.local.local_blur_p,
                solarize_p=self.local.local_solarize_p,
            )
            for _ in range(self.local.n_local)
        ]
