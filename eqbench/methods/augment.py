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
* whole images: the reference recipes crop from the full image, whatever its shape. With the
  config's ``full_image`` each image arrives whole, resized to a square, and its width / height
  ``a`` is set for the step (:func:`source_aspect`, by :meth:`Method.forward
  <eqbench.methods.base.Method.forward>`); the crop's area fraction ``s`` and aspect ratio ``r``
  are then those of torchvision's ``RandomResizedCrop`` on the original (``s`` of its area, ``r``
  in its pixels): sides ``√(s·r/a)`` and ``√(s·a/r)`` as fractions of its width and height. The
  ``rot`` preset and EquiMod's un-augmented view see the squashed square as it is;
* colour jitter applies brightness → contrast → saturation → hue in that fixed order (eqbench's
  ``colour`` transformation; torchvision shuffles the order per image);
* blur σ is given in pixels of the reference crop and scaled with the crop's side: global views
  by ``image_size / 224``, DINO's local crops by ``local_size / 96``; kernel ``2·ceil(3σ_max) + 1``.

The ``rot`` preset (``augment: {preset: rot}``) replaces the whole pipeline by a rotation: TIR's
"rot" augmentation setting (Wang et al., AAAI-26, arXiv 2503.18753, Table 1: "Ours(VICReg, rot,
rot)", A1 and A2 rotation only, against "all", the base method's usual augmentations). Each view
is the whole loaded image (resized to the view size if it differs), rotated about its centre by an
angle uniform in ``rotation_degrees`` with zero fill; no crop, flip, colour, blur or solarisation.
**eqbench default** for the range, which the paper does not state for the augmentation: [-45°,
45°], the rotation range it gives for the transformation ``g`` (Table 2), so that A2 and ``g``
draw from the same distribution.

Methods that learn from the augmentations themselves (AugSelf, EquiMod, ...) need each view's
parameters: :meth:`TwoViewAugment.with_params` and :meth:`TwoViewAugment.crop_with_params` return
them as :class:`ViewParams`, from the same draws that made the views (the views are bit-identical
to those of :meth:`TwoViewAugment.__call__` and the generator ends in the same state).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.registry import did_you_mean
from eqbench.transforms import Transformation, build_transform
from eqbench.transforms.photometric import grayscale

#: ``AugmentConfig.preset`` values: the full pipeline, or rotation only.
AUGMENT_PRESETS = ("all", "rot")

#: Pixel size at which ``blur_sigma`` is given for the global views.
REFERENCE_SIZE = 224

#: Side of DINO's local crops, at which their blur σ is given: DINO, iBOT and GTSA blur the 96 px
#: local crops with σ uniform in [0.1, 2] pixels of the 96 px crop.
LOCAL_REFERENCE_SIZE = 96


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
        blur_sigma: range of the blur σ in pixels at 224 px (global views) and at 96 px (local
            crops of :class:`MultiCropAugment`).
        solarize_p: probability of solarisation (invert pixels >= 0.5), per view.
        preset: ``all``, the pipeline above (the base method's usual augmentations), or ``rot``,
            rotation only (TIR's "rot" setting; see the module docstring); ``rot`` ignores every
            option above.
        rotation_degrees: angle range in degrees of the ``rot`` preset (eqbench default
            [-45, 45], the paper's range for TIR's rotation ``g``).
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
    preset: str = "all"
    rotation_degrees: tuple[float, float] = (-45.0, 45.0)

    def __post_init__(self) -> None:
        where = "augment options"
        if self.preset not in AUGMENT_PRESETS:
            hint = did_you_mean(self.preset, list(AUGMENT_PRESETS))
            raise ConfigError(
                f"{where}: unknown preset '{self.preset}'.{hint} Use one of "
                f"{', '.join(AUGMENT_PRESETS)}."
            )
        if not self.rotation_degrees[0] <= self.rotation_degrees[1]:
            raise ConfigError(f"{where}: rotation_degrees must satisfy low <= high.")
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


#: Columns of :meth:`ViewParams.as_tensor`, in order.
VIEW_PARAM_COLUMNS: tuple[str, ...] = (
    "crop_x0",
    "crop_y0",
    "crop_w",
    "crop_h",
    "flip",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "grayscale",
    "blur_sigma",
    "solarize",
    "rotation",
)


@dataclass
class ViewParams:
    """The augmentation parameters of one batch of views, one row per image (CPU tensors).

    Attributes:
        crop: ``(B, 4)`` float32 crop box ``(x0, y0, w, h)``: top-left corner and size as
            fractions of the input image's side (the box is always inside the image).
        flip: ``(B,)`` bool, horizontal flip applied after the crop.
        jitter: ``(B, 4)`` float32 colour-jitter offsets *applied* (brightness, contrast,
            saturation factors ``1 + offset``; hue shift in turns); zeros where jitter was off,
            which is the identity.
        grayscale: ``(B,)`` bool.
        blur_sigma: ``(B,)`` float32 blur σ in the units of ``AugmentConfig.blur_sigma`` (pixels
            at 224 px for global views, at 96 px for local crops); 0 where blur was off.
        solarize: ``(B,)`` bool.
        rotation: ``(B,)`` float32 rotation in degrees (counter-clockwise) applied after
            everything above; the shared augmentations never rotate (zeros), methods that rotate
            a view set it with :meth:`rotated`.
    """

    crop: Tensor
    flip: Tensor
    jitter: Tensor
    grayscale: Tensor
    blur_sigma: Tensor
    solarize: Tensor
    rotation: Tensor

    def as_tensor(self) -> Tensor:
        """``(B, 13)`` float32 with the columns of :data:`VIEW_PARAM_COLUMNS`."""
        return torch.cat(
            [
                self.crop.float(),
                self.flip.float().unsqueeze(1),
                self.jitter.float(),
                self.grayscale.float().unsqueeze(1),
                self.blur_sigma.float().unsqueeze(1),
                self.solarize.float().unsqueeze(1),
                self.rotation.float().unsqueeze(1),
            ],
            dim=1,
        )

    def rotated(self, degrees: Tensor) -> ViewParams:
        """A copy with ``rotation`` set to ``degrees`` ``(B,)``."""
        return dataclasses.replace(self, rotation=degrees.detach().float().cpu().reshape(-1))


#: Width / height of the source images of the current step's views (``None``: the loaded images
#: are the squares to crop from).
_SOURCE_ASPECT: ContextVar[Tensor | None] = ContextVar("source_aspect", default=None)


@contextmanager
def source_aspect(aspect: Tensor | None) -> Iterator[None]:
    """Within the block, random resized crops of a batch of ``n`` images are drawn for whole
    source images of width / height ``aspect`` ``(n,)`` resized to squares (see the module
    docstring); ``None`` crops the squares as they are."""
    token = _SOURCE_ASPECT.set(None if aspect is None else aspect.detach().double().cpu())
    try:
        yield
    finally:
        _SOURCE_ASPECT.reset(token)


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
        self.rotation = build_transform("rotation", image_size, degrees=list(c.rotation_degrees))

    def describe(self) -> dict[str, Any]:
        """The resolved options, JSON-able."""
        return to_dict(self.config)

    def crop_boxes(
        self,
        n: int,
        generator: torch.Generator,
        crop_scale: tuple[float, float] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Random resized crop boxes and flips.

        Draws, in order: the area fractions, the log aspect ratios, the centres' x, the centres'
        y, the flips (``n`` each). ``crop_scale`` overrides the config's area range (local crops).
        Under :func:`source_aspect` the area and aspect ratio are the source image's.

        Returns:
            ``(box, flip)``: ``box`` ``(n, 4)`` float64 ``(centre_x, centre_y, width, height)``
            as fractions of the image side; ``flip`` ``(n,)`` bool.
        """
        c = self.config
        area = _uniform(n, *(crop_scale or c.crop_scale), generator)
        log_ratio = _uniform(n, math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]), generator)
        ratio = torch.exp(log_ratio)  # width / height in the source's pixels
        aspect = _SOURCE_ASPECT.get()
        if aspect is not None:
            if aspect.shape != (n,):
                raise ValueError(f"source aspect {tuple(aspect.shape)} for a batch of {n} crops")
            # torchvision RandomResizedCrop.get_params on a W×H image: w = √(s·W·H·r) pixels,
            # h = √(s·W·H/r); as fractions of W and H with a = W/H: √(s·r/a) and √(s·a/r)
            ratio = ratio / aspect
        width = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the image side
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        centre_x = width / 2 + torch.rand(n, generator=generator, dtype=torch.float64) * (1 - width)
        centre_y = height / 2 + torch.rand(n, generator=generator, dtype=torch.float64) * (
            1 - height
        )
        flip = torch.rand(n, generator=generator, dtype=torch.float64) < c.flip_p
        return torch.stack([centre_x, centre_y, width, height], dim=1), flip

    @staticmethod
    def boxes_to_theta(box: Tensor, flip: Tensor) -> Tensor:
        """``affine_grid`` matrices ``(n, 2, 3)`` for :meth:`crop_boxes`' output.

        Output coordinate ``x`` (in [-1, 1]) samples the input at ``±w·x + (2·c_x − 1)`` where
        ``w`` is the crop width as a fraction of the image and ``c_x`` its centre in [0, 1].
        """
        centre_x, centre_y, width, height = box.unbind(dim=1)
        theta = torch.zeros(box.shape[0], 2, 3, dtype=box.dtype)
        theta[:, 0, 0] = torch.where(flip, -width, width)
        theta[:, 0, 2] = 2 * centre_x - 1
        theta[:, 1, 1] = height
        theta[:, 1, 2] = 2 * centre_y - 1
        return theta

    def crop_theta(
        self,
        n: int,
        generator: torch.Generator,
        crop_scale: tuple[float, float] | None = None,
    ) -> Tensor:
        """``affine_grid`` matrices ``(n, 2, 3)`` for random resized crops with random flips
        (:meth:`crop_boxes` then :meth:`boxes_to_theta`)."""
        return self.boxes_to_theta(*self.crop_boxes(n, generator, crop_scale))

    def view(self, images: Tensor, index: int, generator: torch.Generator) -> Tensor:
        """One augmented view (:meth:`view_with_params` without the parameters)."""
        return self.view_with_params(images, index, generator)[0]

    def view_with_params(
        self, images: Tensor, index: int, generator: torch.Generator
    ) -> tuple[Tensor, ViewParams]:
        """One augmented view and its parameters.

        Args:
            images: ``(B, 3, H, W)`` float images in [0, 1].
            index: 0 or 1, which view's probabilities (blur, solarisation) to use.
            generator: source of every random parameter.

        Returns:
            ``(B, 3, S, S)`` float images in [0, 1], ``S = image_size``, and their
            :class:`ViewParams`.
        """
        c = self.config
        if c.preset == "rot":
            return self.rotated_with_params(images, generator)
        return self.crop_with_params(
            images,
            generator,
            size=self.image_size,
            crop_scale=c.crop_scale,
            blur=self.blur,
            blur_p=c.blur_p[index],
            solarize_p=c.solarize_p[index],
        )

    def rotated_with_params(
        self, images: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ViewParams]:
        """The ``rot`` preset's view: the whole image rotated by an angle drawn from
        ``rotation_degrees`` (one draw per image), and its parameters.

        Returns:
            ``(B, 3, S, S)`` float images in [0, 1] and their :class:`ViewParams` (the whole
            image as crop box, no photometric change, ``rotation`` the angle).
        """
        n, size = images.shape[0], self.image_size
        x = images
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        angle = self.rotation.sample(n, generator)  # (B, 1) degrees, counter-clockwise
        out = self.rotation.apply(x, angle.to(x.device))
        off = torch.zeros(n, dtype=torch.bool)
        params = ViewParams(
            crop=torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4).clone(),
            flip=off,
            jitter=torch.zeros(n, 4),
            grayscale=off.clone(),
            blur_sigma=torch.zeros(n),
            solarize=off.clone(),
            rotation=angle[:, 0].float(),
        )
        return out, params

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
        blur_reference: int = REFERENCE_SIZE,
    ) -> Tensor:
        """A random resized crop of side ``size``, then flip, jitter, grayscale, blur, solarise
        (:meth:`crop_with_params` without the parameters).

        Returns:
            ``(B, 3, size, size)`` float images in [0, 1].
        """
        return self.crop_with_params(
            images,
            generator,
            size=size,
            crop_scale=crop_scale,
            blur=blur,
            blur_p=blur_p,
            solarize_p=solarize_p,
            blur_reference=blur_reference,
        )[0]

    def crop_with_params(
        self,
        images: Tensor,
        generator: torch.Generator,
        *,
        size: int,
        crop_scale: tuple[float, float],
        blur: Transformation,
        blur_p: float,
        solarize_p: float,
        boxes: tuple[Tensor, Tensor] | None = None,
        blur_reference: int = REFERENCE_SIZE,
    ) -> tuple[Tensor, ViewParams]:
        """A random resized crop of side ``size``, then flip, jitter, grayscale, blur, solarise.

        Draws, in order: the crop and flip (unless ``boxes`` is given), the jitter parameters,
        four probability draws (jitter, grayscale, blur, solarise), the blur σ.

        Args:
            boxes: crop boxes and flips already drawn by :meth:`crop_boxes` (methods that
                re-sample crops until they overlap, such as GTSA), used instead of new draws.
            blur_reference: the crop side at which ``blur``'s σ range is given (224 for global
                views, 96 for local crops); ``blur`` is built for ``size`` with σ scaled by
                ``size / blur_reference``.

        Returns:
            ``(B, 3, size, size)`` float images in [0, 1], and the :class:`ViewParams` that
            made them.
        """
        c = self.config
        n, device = images.shape[0], images.device
        box, flip = boxes if boxes is not None else self.crop_boxes(n, generator, crop_scale)
        theta = self.boxes_to_theta(box, flip).to(device=device, dtype=images.dtype)
        grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
        out = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )  # (B, 3, size, size)
        jitter_params = self.jitter.sample(n, generator)
        masks = torch.rand(4, n, generator=generator)  # jitter, grayscale, blur, solarise
        blur_params = blur.sample(n, generator)
        jitter_mask = masks[0] < c.jitter_p
        jitter_on = jitter_mask.to(device).view(-1, 1, 1, 1)
        out = torch.where(jitter_on, self.jitter.apply(out, jitter_params.to(device)), out)
        gray_mask = masks[1] < c.grayscale_p
        gray_on = gray_mask.to(device).view(-1, 1, 1, 1)
        out = torch.where(gray_on, grayscale(out).expand_as(out), out)
        blur_on = masks[2] < blur_p
        sigma = blur_params * blur_on.unsqueeze(1)  # (B, 1) pixels at `size`; σ 0: identity
        out = blur.apply(out, sigma.to(device))
        solarise_mask = masks[3] < solarize_p
        solarise_on = solarise_mask.to(device).view(-1, 1, 1, 1)
        out = torch.where(solarise_on & (out >= 0.5), 1.0 - out, out)
        centre, extent = box[:, :2], box[:, 2:]
        params = ViewParams(
            crop=torch.cat([centre - extent / 2, extent], dim=1).float(),
            flip=flip,
            jitter=jitter_params.float() * jitter_mask.unsqueeze(1),
            grayscale=gray_mask,
            blur_sigma=(sigma[:, 0] * (blur_reference / size)).float(),
            solarize=solarise_mask,
            rotation=torch.zeros(n),
        )
        return out, params

    def __call__(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Two views ``(B, 3, S, S)`` of uint8 (or [0, 1] float) ``images`` ``(B, 3, H, W)``."""
        x = to_unit_float(images)
        return self.view(x, 0, generator), self.view(x, 1, generator)

    def with_params(
        self, images: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, ViewParams, ViewParams]:
        """``(v1, v2, params1, params2)``: the views of :meth:`__call__` (same draws, same
        order) and their :class:`ViewParams`."""
        x = to_unit_float(images)
        v1, p1 = self.view_with_params(x, 0, generator)
        v2, p2 = self.view_with_params(x, 1, generator)
        return v1, v2, p1, p2


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
        if config.preset != "all":
            raise ConfigError(
                f"augment options: preset '{config.preset}' makes two views only; multi-crop "
                "methods (DINO, iBOT, DINOv2, GTSA) need preset: all."
            )
        super().__init__(config, image_size)
        self.local = local
        self.local_size = local.local_size or default_local_size(image_size, patch_size)
        # DINO blurs its 96 px local crops with σ in [0.1, 2] px of the crop (facebookresearch/dino,
        # main_dino.py lines 451-455: RandomResizedCrop(96) then utils.GaussianBlur(p=0.5), whose
        # utils.py lines 40-54 draw the PIL radius uniform in [0.1, 2]; the same in bytedance/ibot
        # main_ibot.py lines 607-610 and bok3948/GTSA util/gtsa_transforms.py lines 100-101).
        # A local crop of another side is blurred by the same fraction of its side: σ scales by
        # local_size / 96 (at the default local size, 96/224 of the global one, this is the
        # global views' image_size / 224). It used to scale by local_size / 224, blurring 96 px
        # crops with σ in [0.04, 0.86] px.
        scale = self.local_size / LOCAL_REFERENCE_SIZE
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
                blur_reference=LOCAL_REFERENCE_SIZE,
            )
            for _ in range(self.local.n_local)
        ]
