"""Photometric transformations: colour jitter and Gaussian blur, batched with per-image parameters.

Both follow torchvision's tensor kernels (``torchvision.transforms.v2.functional``) formula for
formula, so one image transformed here equals the torchvision result to float32 round-off, but a
whole batch with different factors per image is handled in one vectorised pass.

* ``colour``: offsets ``(brightness, contrast, saturation, hue)``; the factors are ``1 + offset``
  (hue: a shift by ``offset`` turns of the colour wheel). Applied in the fixed order brightness →
  contrast → saturation → hue, as ``ColorJitter`` with ``fn_idx = [0, 1, 2, 3]`` (Chen et al.,
  SimCLR, ICML 2020, use the same four adjustments). ``g_{sθ}`` scales every offset by ``s``.
* ``blur``: Gaussian blur of standard deviation ``sigma`` pixels (not rescaled with the image
  size), reflect padding. ``g_{sθ}`` blurs with ``s·sigma``; ``sigma = 0`` is exactly the identity.

Neither moves pixels, so :meth:`~eqbench.transforms.base.Transformation.context_size` is the view
size (blur pads by reflection and never introduces fill).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eqbench.errors import ConfigError
from eqbench.transforms.base import TRANSFORMS, Transformation, uniform
from eqbench.transforms.geometric import (
    RangeConfigMixin,
    check_params,
    fraction_vector,
    resolve_ranges,
)

logger = logging.getLogger(__name__)

#: ITU-R 601-2 luma weights, as torchvision's ``rgb_to_grayscale``.
_LUMA = (0.2989, 0.587, 0.114)


def grayscale(images: Tensor) -> Tensor:
    """Luma ``(B, 1, H, W)`` of RGB ``images`` ``(B, 3, H, W)`` (torchvision's weights)."""
    r, g, b = images.unbind(dim=-3)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(-3)


def blend(image1: Tensor, image2: Tensor, ratio: Tensor) -> Tensor:
    """``clamp(ratio·image1 + (1 − ratio)·image2, 0, 1)`` with per-image ``ratio`` ``(B,)``."""
    r = ratio.view(-1, 1, 1, 1)
    return (image1 * r + image2 * (1.0 - r)).clamp(0.0, 1.0)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB → HSV, all channels in [0, 1], ``(B, 3, H, W)``; torchvision's ``_rgb_to_hsv``."""
    r, g, _ = images.unbind(dim=-3)
    minc, maxc = torch.aminmax(images, dim=-3)
    eqc = maxc == minc
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    divisor = torch.where(eqc, ones, channels_range).unsqueeze(-3)
    rc, gc, bc = ((maxc.unsqueeze(-3) - images) / divisor).unbind(dim=-3)
    maxc_neq_r = maxc != r
    maxc_eq_g = maxc == g
    hg = (rc + 2.0 - bc) * (maxc_eq_g & maxc_neq_r)
    hr = (bc - gc) * ~maxc_neq_r
    hb = (gc + 4.0 - rc) * (maxc_neq_r & ~maxc_eq_g)
    h = torch.fmod((hr + hg + hb) * (1.0 / 6.0) + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """HSV → RGB, ``(B, 3, H, W)``; torchvision's ``_hsv_to_rgb``."""
    h, s, v = images.unbind(dim=-3)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    sector = i.to(torch.int64).remainder(6)
    q = ((1.0 - s * f) * v).clamp(0.0, 1.0)
    t = ((s * f + (1.0 - s)) * v).clamp(0.0, 1.0)
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    select = torch.tensor(
        [[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=images.device
    )
    index = select[:, sector].movedim(0, -3)  # (B, 3, H, W) rows of vpqt per output channel
    return vpqt.gather(-3, index)


@TRANSFORMS.register("colour")
class ColourJitter(RangeConfigMixin, Transformation):
    """Brightness, contrast, saturation and hue offsets, each uniform in its range.

    Options (offset ranges): ``brightness=[-0.4, 0.4]``, ``contrast=[-0.4, 0.4]``,
    ``saturation=[-0.4, 0.4]``, ``hue=[-0.1, 0.1]`` (SimCLR's strength-1 jitter, Chen et al. 2020).
    """

    name = "colour"
    param_names = ("brightness", "contrast", "saturation", "hue")

    def __init__(self, image_size: int, **options: Any) -> None:
        super().__init__(image_size)
        defaults = {
            "brightness": (-0.4, 0.4),
            "contrast": (-0.4, 0.4),
            "saturation": (-0.4, 0.4),
            "hue": (-0.1, 0.1),
        }
        self.ranges = resolve_ranges(self.name, options, defaults)
        for key in ("brightness", "contrast", "saturation"):
            if self.ranges[key][0] < -1.0:
                raise ConfigError(f"Option '{key}' of 'colour' must be >= -1 (factor 1 + offset).")
        if not -0.5 <= self.ranges["hue"][0] <= self.ranges["hue"][1] <= 0.5:
            raise ConfigError("Option 'hue' of 'colour' must lie in [-0.5, 0.5] (turns).")

    def param_bounds(self) -> tuple[Tensor, Tensor]:
        """``(low, high)``, each ``(4,)``: the offset ranges."""
        lows, highs = zip(*(self.ranges[k] for k in self.param_names), strict=True)
        return torch.tensor(lows), torch.tensor(highs)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        cols = [uniform(n, *self.ranges[k], generator) for k in self.param_names]
        return torch.stack(cols, dim=1)

    def apply(self, images: Tensor, params: Tensor, fraction: float | Tensor = 1.0) -> Tensor:
        """Jitter each image with its own offsets scaled by ``fraction``.

        Args:
            images: ``(B, 3, H, W)`` float RGB in [0, 1].
            params: ``(B, 4)`` offsets (brightness, contrast, saturation, hue).
            fraction: scalar or ``(B,)``.

        Returns:
            ``(B, 3, H, W)`` in [0, 1].
        """
        check_params(self, images, params)
        if images.shape[1] != 3:
            raise ValueError(f"colour needs RGB images, got {images.shape[1]} channels")
        frac = fraction_vector(fraction, images.shape[0], images.device)
        offsets = (params.to(images.device).double() * frac[:, None]).to(images.dtype)
        brightness, contrast, saturation = (1.0 + offsets[:, :3]).unbind(dim=1)
        out = (images * brightness.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
        mean = grayscale(out).mean(dim=(-3, -2, -1), keepdim=True)
        out = blend(out, mean, contrast)
        out = blend(out, grayscale(out), saturation)
        hsv = rgb_to_hsv(out)
        hue = torch.remainder(hsv[:, 0] + offsets[:, 3].view(-1, 1, 1), 1.0)
        return hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per σ.

    ``w_i ∝ exp(−i² / (2σ²))`` for ``i = −radius … radius`` (torchvision's
    ``_get_gaussian_kernel1d``); ``σ = 0`` gives the unit impulse, so blurring is the identity.

    Args:
        sigma: ``(B,)`` standard deviations in pixels, ``>= 0``.
        radius: half-width; the kernel size is ``2·radius + 1``.

    Returns:
        ``(B, 2·radius + 1)`` kernels of ``sigma``'s dtype, each summing to 1.
    """
    d = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    positive = sigma > 0
    safe = torch.where(positive, sigma, torch.ones_like(sigma)).unsqueeze(1)
    weights = torch.softmax(-(d / safe).pow(2) / 2.0, dim=1)
    impulse = (d == 0).to(sigma.dtype).expand_as(weights)
    return torch.where(positive.unsqueeze(1), weights, impulse)


@TRANSFORMS.register("blur")
class GaussianBlur(RangeConfigMixin, Transformation):
    """Gaussian blur with per-image ``sigma`` pixels, option ``sigma=[0.1, 2.0]``.

    The kernel size is fixed by the configured maximum, ``2·ceil(3·σ_max) + 1`` (13 for
    σ_max = 2), truncating the Gaussian at ±3σ_max ≥ ±3σ; a σ above the configured maximum is
    truncated at ±3σ_max too. For images smaller than the kernel, the radius is cut to
    ``min(H, W) − 1`` (reflect padding needs it). Separable: one horizontal and one vertical
    depthwise convolution over all ``B·C`` channels at once (grouped convolution).
    """

    name = "blur"
    param_names = ("sigma",)

    def __init__(self, image_size: int, **options: Any) -> None:
        super().__init__(image_size)
        self.ranges = resolve_ranges(self.name, options, {"sigma": (0.1, 2.0)})
        if self.ranges["sigma"][0] < 0:
            raise ConfigError(f"Option 'sigma' of 'blur' must be >= 0, got {self.ranges['sigma']}.")
        #: Half-width of the kernel, ``ceil(3·σ_max)``.
        self.radius = math.ceil(3.0 * self.ranges["sigma"][1])

    @property
    def kernel_size(self) -> int:
        """``2·ceil(3·σ_max) + 1``."""
        return 2 * self.radius + 1

    def param_bounds(self) -> tuple[Tensor, Tensor]:
        """``(low, high)``, each ``(1,)``: the σ range."""
        low, high = self.ranges["sigma"]
        return torch.tensor([low]), torch.tensor([high])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return uniform(n, *self.ranges["sigma"], generator).unsqueeze(1)

    def apply(self, images: Tensor, params: Tensor, fraction: float | Tensor = 1.0) -> Tensor:
        """Blur each image with ``fraction·sigma``.

        Args:
            images: ``(B, C, H, W)`` float.
            params: ``(B, 1)`` σ in pixels.
            fraction: scalar or ``(B,)``.

        Returns:
            ``(B, C, H, W)``; images whose σ is 0 are returned unchanged (bit for bit).
        """
        check_params(self, images, params)
        batch, channels, height, width = images.shape
        frac = fraction_vector(fraction, batch, images.device)
        sigma = (params[:, 0].to(images.device).double() * frac).to(images.dtype)
        radius = min(self.radius, height - 1, width - 1)
        if radius <= 0:
            return images.clone()
        kernels = gaussian_kernels(sigma, radius).repeat_interleave(channels, dim=0)
        size = 2 * radius + 1
        padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
        flat = padded.reshape(1, batch * channels, height + 2 * radius, width + 2 * radius)
        flat = F.conv2d(flat, kernels.view(-1, 1, 1, size), groups=batch * channels)
        flat = F.conv2d(flat, kernels.view(-1, 1, size, 1), groups=batch * channels)
        out = flat.view(batch, channels, height, width)
        return torch.where((sigma == 0).view(-1, 1, 1, 1), images, out)
