"""Geometric transformations: rotation, translation, SE(2), scale, four-fold rotation, flip.

Continuous ones are affine maps about the image centre, applied with one batched
:func:`torch.nn.functional.affine_grid` / :func:`~torch.nn.functional.grid_sample` call (bilinear,
``align_corners=False``, zero fill) from per-image matrices. The intermediate state ``g_{sθ}``
(TIR, Wang et al., AAAI-26, arXiv 2503.18753) is the transformation with parameters ``s·θ``.

Coordinates (used by :meth:`AffineTransformation.matrices`): *centred pixel coordinates*, origin
at the image centre, ``x`` to the right, ``y`` **down**, one unit per pixel. A matrix ``M``
``(3, 3)`` is the *forward* map: content at input point ``p`` appears at output point ``M·p``.

* rotation by ``angle`` degrees is counter-clockwise *as seen on screen* (torchvision's
  ``rotate`` and :func:`torch.rot90` convention): ``M = [[cos a, sin a], [-sin a, cos a]]``;
* translation by ``(tx, ty)`` pixels moves content right by ``tx`` and down by ``ty``;
* scale ``exp(log_scale)`` zooms in (content gets larger) about the centre when positive.

Pixel-valued parameters are pixels of the tensor actually transformed, so a transformation built
for a view of ``image_size`` pixels can be applied to a larger context image (see
:meth:`~eqbench.transforms.base.Transformation.context_size`) and the view cropped afterwards.

The small option/fraction helpers here (:func:`resolve_ranges`, :func:`fraction_vector`,
:func:`check_params`, :func:`centred_side`, :class:`RangeConfigMixin`) are shared with
:mod:`eqbench.transforms.photometric`.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eqbench.errors import ConfigError
from eqbench.registry import did_you_mean
from eqbench.transforms.base import TRANSFORMS, Transformation, uniform

logger = logging.getLogger(__name__)

#: Image side at which pixel-valued option ranges (translation) are given.
REFERENCE_SIZE = 224


# ----------------------------------------------------------------------------------- helpers


def resolve_ranges(
    transform: str, options: Mapping[str, Any], defaults: Mapping[str, Sequence[float]]
) -> dict[str, tuple[float, float]]:
    """Merge ``options`` into ``defaults``; every value must be a ``[low, high]`` pair.

    An option set to ``None`` (YAML ``null``) is unset: its default applies, and an unknown one is
    ignored, so that a config can drop a range it inherits through ``include:`` (e.g. ``degrees:
    null`` when it changes the transformation from rotation to colour).

    Raises:
        ConfigError: for an unknown key (with a did-you-mean hint) or a malformed range.
    """
    options = {key: value for key, value in options.items() if value is not None}
    for key in options:
        if key not in defaults:
            hint = did_you_mean(key, sorted(defaults))
            valid = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(
                f"Unknown option '{key}' for transformation '{transform}'.{hint} "
                f"Valid options: {valid}."
            )
    resolved: dict[str, tuple[float, float]] = {}
    for key, default in defaults.items():
        value = options.get(key, default)
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"Option '{key}' of transformation '{transform}' must be a pair [low, high], "
                f"got {value!r}."
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ConfigError(
                f"Option '{key}' of transformation '{transform}' must be finite with low <= "
                f"high, got [{low}, {high}]."
            )
        resolved[key] = (low, high)
    return resolved


def fraction_vector(fraction: float | Tensor, n: int, device: torch.device) -> Tensor:
    """The fraction ``s`` as a float64 vector ``(n,)`` (a scalar is broadcast)."""
    if isinstance(fraction, Tensor):
        frac = fraction.to(device=device, dtype=torch.float64).reshape(-1)
        if frac.numel() == 1:
            return frac.expand(n)
        if frac.shape[0] != n:
            raise ValueError(f"fraction has {frac.shape[0]} entries for a batch of {n}")
        return frac
    return torch.full((n,), float(fraction), dtype=torch.float64, device=device)


def check_params(transform: Transformation, images: Tensor, params: Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is ``(B, C, H, W)`` and ``params`` is ``(B, P)``."""
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    expected = (images.shape[0], len(transform.param_names))
    if tuple(params.shape) != expected:
        raise ValueError(
            f"{transform.name}: params must have shape {expected} "
            f"({', '.join(transform.param_names)}), got {tuple(params.shape)}"
        )


def centred_side(reach: float, view_size: int) -> int:
    """Smallest context side for a view whose pixel centres the inverse map sends to ``±reach``.

    The centre ``view_size`` crop's outermost pixel centres lie at ``±(view_size − 1)/2`` pixels
    from the centre (in each axis); a transformation's inverse map sends them to at most
    ``±reach``. Bilinear sampling (``align_corners=False``) mixes in no fill exactly when every
    sampled point lies within the outermost pixel centres of the context, ``±(side − 1)/2``, so
    ``side >= 2·reach + 1``. The side also keeps the parity of ``view_size``, so the centre crop
    is exactly centred (no half-pixel offset) whatever rounding the cropper uses. A tiny
    tolerance absorbs trigonometric round-off (``|cos 180°| + |sin 180°|`` is ``1 + 1e-16``).

    Args:
        reach: largest ``|x|`` or ``|y|`` (pixels from the centre) of a sampled point.
        view_size: side of the view cropped from the context.

    Returns:
        the context side, ``>= view_size``.
    """
    side = max(view_size, math.ceil(2.0 * reach + 1.0 - 1e-6))
    return side + (side - view_size) % 2


def max_abs_cos_plus_sin(low: float, high: float) -> float:
    """``max |cos a| + |sin a|`` over angles ``a`` in ``[low, high]`` degrees.

    The function has period 90° with maxima ``√2`` at 45° + k·90°, so the maximum is at an
    endpoint unless such an angle lies in the range.
    """

    def value(deg: float) -> float:
        rad = math.radians(deg)
        return abs(math.cos(rad)) + abs(math.sin(rad))

    best = max(value(low), value(high))
    if math.floor((high - 45.0) / 90.0) >= math.ceil((low - 45.0) / 90.0):
        best = math.sqrt(2.0)
    return best


def _eye(n: int, device: torch.device) -> Tensor:
    return torch.eye(3, dtype=torch.float64, device=device).repeat(n, 1, 1)


def rotation_matrices(angle: Tensor) -> Tensor:
    """Forward maps ``(B, 3, 3)`` of counter-clockwise rotations by ``angle`` ``(B,)`` degrees."""
    rad = torch.deg2rad(angle.double())
    cos, sin = torch.cos(rad), torch.sin(rad)
    m = _eye(angle.shape[0], angle.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, sin, -sin, cos
    return m


def translation_matrices(tx: Tensor, ty: Tensor) -> Tensor:
    """Forward maps ``(B, 3, 3)`` moving content by ``(tx, ty)`` ``(B,)`` pixels (right, down)."""
    m = _eye(tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx.double(), ty.double()
    return m


def scale_matrices(log_scale: Tensor) -> Tensor:
    """Forward maps ``(B, 3, 3)`` zooming by ``exp(log_scale)`` ``(B,)`` about the centre."""
    factor = torch.exp(log_scale.double())
    m = _eye(log_scale.shape[0], log_scale.device)
    m[:, 0, 0], m[:, 1, 1] = factor, factor
    return m


def affine_to_theta(matrices: Tensor, height: int, width: int) -> Tensor:
    """Turn forward maps in centred pixel coordinates into ``affine_grid`` matrices.

    ``affine_grid`` wants the *inverse* map (output → input) in normalised coordinates, where
    (``align_corners=False``) ``x_norm = 2·x_pix / width`` and ``y_norm = 2·y_pix / height``.

    Args:
        matrices: ``(B, 3, 3)`` forward maps ``[[A, b], [0, 1]]``.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        ``(B, 2, 3)`` float64 ``theta`` for :func:`torch.nn.functional.affine_grid`.
    """
    a, b = matrices[:, :2, :2], matrices[:, :2, 2]
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    a_inv = (
        torch.stack(
            (
                torch.stack((a[:, 1, 1], -a[:, 0, 1]), -1),
                torch.stack((-a[:, 1, 0], a[:, 0, 0]), -1),
            ),
            dim=1,
        )
        / det[:, None, None]
    )
    b_inv = -(a_inv @ b.unsqueeze(-1)).squeeze(-1)
    norm = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64, device=matrices.device)
    theta_linear = a_inv * norm[:, None] / norm[None, :]
    theta_shift = b_inv * norm
    return torch.cat((theta_linear, theta_shift.unsqueeze(-1)), dim=-1)


# ------------------------------------------------------------------- continuous (affine) ones


class AffineTransformation(Transformation):
    """A continuous geometric transformation given by per-image affine matrices.

    Subclasses define :meth:`_matrices` for already-scaled parameters; ``g_{sθ}`` uses ``s·θ``.
    """

    @abstractmethod
    def param_bounds(self) -> tuple[Tensor, Tensor]:
        """``(low, high)``, each ``(P,)`` float32: the sampling range of every parameter."""

    @abstractmethod
    def _matrices(self, params: Tensor) -> Tensor:
        """Forward maps ``(B, 3, 3)`` float64 for (already fraction-scaled) ``params``."""

    def matrices(self, params: Tensor, fraction: float | Tensor = 1.0) -> Tensor:
        """Forward maps of ``g_{fraction·θ}`` in centred pixel coordinates.

        Args:
            params: ``(B, P)`` parameters.
            fraction: scalar or ``(B,)`` in [0, 1].

        Returns:
            ``(B, 3, 3)`` float64 matrices; ``M·p`` is where content at ``p`` goes.
        """
        frac = fraction_vector(fraction, params.shape[0], params.device)
        return self._matrices(params.double() * frac[:, None])

    def apply(self, images: Tensor, params: Tensor, fraction: float | Tensor = 1.0) -> Tensor:
        """``g_{fraction·θ}(images)``: bilinear resampling with zero fill.

        Args:
            images: ``(B, C, H, W)`` float.
            params: ``(B, P)``.
            fraction: scalar or ``(B,)``.

        Returns:
            ``(B, C, H, W)`` transformed images.
        """
        check_params(self, images, params)
        height, width = images.shape[-2:]
        theta = affine_to_theta(self.matrices(params.to(images.device), fraction), height, width)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )


def _pixel_range(pixels: tuple[float, float], image_size: int) -> tuple[float, float]:
    """A pixel range given at :data:`REFERENCE_SIZE`, rescaled to ``image_size``."""
    ratio = image_size / REFERENCE_SIZE
    return pixels[0] * ratio, pixels[1] * ratio


class RangeConfigMixin:
    """Shared ``config`` for transformations whose options are all ``[low, high]`` ranges."""

    ranges: dict[str, tuple[float, float]]

    def config(self) -> dict[str, Any]:
        """The resolved options; ``build_transform(name, size, **config())`` rebuilds it."""
        return {key: [low, high] for key, (low, high) in self.ranges.items()}


@TRANSFORMS.register("rotation")
class Rotation(RangeConfigMixin, AffineTransformation):
    """Rotation about the image centre by ``angle`` degrees (counter-clockwise), ``degrees=[-45,
    45]``. ``g_{sθ}`` rotates by ``s·angle``, so intermediates compose exactly."""

    name = "rotation"
    param_names = ("angle",)

    def __init__(self, image_size: int, **options: Any) -> None:
        super().__init__(image_size)
        self.ranges = resolve_ranges(self.name, options, {"degrees": (-45.0, 45.0)})

    def param_bounds(self) -> tuple[Tensor, Tensor]:
        low, high = self.ranges["degrees"]
        return torch.tensor([low]), torch.tensor([high])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return uniform(n, *self.ranges["degrees"], generator).unsqueeze(1)

    def _matrices(self, params: Tensor) -> Tensor:
        return rotation_matrices(params[:, 0])

    def context_size(self, view_size: int) -> int:
        """``≈ view·max(|cos a| + |sin a|)`` over the range (``√2·view`` when 45° is in it).

        Exactly: the view's corner pixel centres ``(±h, ±h)``, ``h = (view − 1)/2``, come from
        at most ``h·(|cos a| + |sin a|)`` (see :func:`centred_side`).
        """
        spread = max_abs_cos_plus_sin(*self.ranges["degrees"])
        return centred_side(0.5 * (view_size - 1) * spread, view_size)


@TRANSFORMS.register("translation")
class Translation(RangeConfigMixin, AffineTransformation):
    """Translation by ``(tx, ty)`` pixels; ``pixels=[-10, 10]`` is given at 224 px and scaled by
    ``image_size / 224`` when sampling. ``g_{sθ}`` translates by ``s·t``."""

    name = "translation"
    param_names = ("tx", "ty")

    def __init__(self, image_size: int, **options: Any) -> None:
        super().__init__(image_size)
        self.ranges = resolve_ranges(self.name, options, {"pixels": (-10.0, 10.0)})

    def pixel_range(self) -> tuple[float, float]:
        """The translation range in pixels at ``image_size``."""
        return _pixel_range(self.ranges["pixels"], self.image_size)

    def param_bounds(self) -> tuple[Tensor, Tensor]:
        low, high = self.pixel_range()
        return torch.tensor([low, low]), torch.tensor([high, high])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        low, high = self.pixel_range()
        tx = uniform(n, low, high, generator)
        ty = uniform(n, low, high, generator)
        return torch.stack((tx, ty), dim=1)

    def _matrices(self, params: Tensor) -> Tensor:
        return translation_matrices(params[:, 0], params[:, 1])

    def context_size(self, view_size: int) -> int:
        """``view + 2·max|t|`` (made even-offset, see :func:`centred_side`)."""
        shift = max(abs(v) for v in self.pixel_range())
        return centred_side(0.5 * (view_size - 1) + shift, view_size)


@TRANSFORMS.register("se2")
class SE2(RangeConfigMixin, AffineTransformation):
    """Rigid motion: rotation by ``angle`` about the centre, **then** translation by ``(tx,
    ty)``: ``M = T(t)·R(angle)``. Ranges ``degrees=[-45, 45]``, ``pixels=[-10, 10]`` (at 224 px).

    ``g_{sθ} = T(s·t)·R(s·angle)``: a straight line in parameter space. Unlike the one-parameter
    subgroups above it does not compose (``g_{s1θ}∘g_{s2θ} ≠ g_{(s1+s2)θ}`` unless ``t = 0`` or
    ``angle = 0``), because rotations and translations do not commute.
    """

    name = "se2"
    param_names = ("angle", "tx", "ty")

    def __init__(self, image_size: int, **options: Any) -> None:
        super().__init__(image_size)
        defaults = {"degrees": (-45.0, 45.0), "pixels": (-10.0, 10.0)}
        self.ranges = resolve_ranges(self.name, options, defaults)

    def pixel_range(self) -> tuple[float, float]:
        """The translation range in pixels at ``image_size``."""
        return _pixel_range(self.ranges["pixels"], self.image_size)

    def param_bounds(self) -> tuple[Tensor, Tensor]:
        (a_low, a_high), (t_low, t_high) = self.ranges["degrees"], self.pixel_range()
        return torch.tensor([a_low, t_low, t_low]), torch.tensor([a_high, t_high, t_high])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        t_low, t_high = self.pixel_range()
        angle = uniform(n, *self.ranges["degrees"], generator)
        tx = uniform(n, t_low, t_high, generator)
        ty = uniform(n, t_low, t_high, generator)
        return torch.stack((angle, tx, ty), dim=1)

    def _matrices(self, params: Tensor) -> Tensor:
        return translation_matrices(params[:, 1], params[:, 2]) @ rotation_matrices(params[:, 0])

    def context_size(self, view_size: int) -> int:
        """``≈ max(|cos a| + |sin a|)·(view + 2·max|t|)``: the inverse map un-translates the view
        (reaching ``(view − 1)/2 + max|t|``), then un-rotates that square (see
        :func:`centred_side`). Larger than rotation's plus translation's margins because the
        translation is applied after the rotation, so un-rotating spreads it too."""
        shift = max(abs(v) for v in self.pixel_range())
        spread = max_abs_cos_plus_sin(*self.ranges["degrees"])
        return centred_side((0.5 * (view_size - 1) + shift) * spread, view_size)


@TRANSFORMS.register("scale")
class Scale(RangeConfigMixin, AffineTransformation):
    """Zoom about the centre by ``exp(log_scale)``; ``factor=[0.75, 1.333]`` sampled
    log-uniformly. ``g_{sθ}`` zooms by ``exp(s·log_scale)``, so intermediates compose."""

    name = "scale"
    param_names = ("log_scale",)

    def __init__(self, image_size: int, **options: Any) -> None:
        super().__init__(image_size)
        self.ranges = resolve_ranges(self.name, options, {"factor": (0.75, 1.333)})
        if self.ranges["factor"][0] <= 0:
            raise ConfigError(f"Option 'factor' of 'scale' must be > 0, got {self.ranges}.")

    def param_bounds(self) -> tuple[Tensor, Tensor]:
        low, high = self.ranges["factor"]
        return torch.tensor([math.log(low)]), torch.tensor([math.log(high)])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        low, high = self.ranges["factor"]
        return uniform(n, math.log(low), math.log(high), generator).unsqueeze(1)

    def _matrices(self, params: Tensor) -> Tensor:
        return scale_matrices(params[:, 0])

    def context_size(self, view_size: int) -> int:
        """``≈ view / min factor`` (zooming out reveals more of the context); exactly, the
        reach is ``(view − 1)/2 / min factor`` (see :func:`centred_side`)."""
        return centred_side(0.5 * (view_size - 1) / min(self.ranges["factor"][0], 1.0), view_size)


# ------------------------------------------------------------------------------ discrete ones


def _discrete_fraction(fraction: float | Tensor, n: int, device: torch.device) -> Tensor:
    """Fraction as a ``(n,)`` bool (apply or not); anything but 0 or 1 is a ``ValueError``."""
    frac = fraction_vector(fraction, n, device)
    if not bool(((frac == 0) | (frac == 1)).all()):
        raise ValueError("Discrete transformations have no intermediate states: fraction 0 or 1.")
    return frac == 1


class DiscreteTransformation(Transformation):
    """A finite group; the single parameter is a class index stored as float."""

    discrete = True
    classes: int

    def __init__(self, image_size: int, **options: Any) -> None:
        super().__init__(image_size)
        resolve_ranges(self.name, options, {})

    @property
    def num_classes(self) -> int:
        return self.classes

    def param_bounds(self) -> tuple[Tensor, Tensor]:
        """``(0, num_classes - 1)`` as ``(1,)`` tensors."""
        return torch.tensor([0.0]), torch.tensor([float(self.classes - 1)])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.randint(0, self.classes, (n, 1), generator=generator)
        return k.to(torch.float32)

    def _classes(self, images: Tensor, params: Tensor, fraction: float | Tensor) -> Tensor:
        """Effective class per image ``(B,)`` long: 0 where ``fraction`` is 0."""
        check_params(self, images, params)
        active = _discrete_fraction(fraction, images.shape[0], images.device)
        k = params[:, 0].to(images.device).round().long()
        if bool(((k < 0) | (k >= self.classes)).any()):
            raise ValueError(f"{self.name}: class indices must be in [0, {self.classes}).")
        return torch.where(active, k, torch.zeros_like(k))

    def config(self) -> dict[str, Any]:
        return {}


@TRANSFORMS.register("rotation4")
class Rotation4(DiscreteTransformation):
    """Rotation by ``k·90°`` counter-clockwise, ``k`` in {0, 1, 2, 3}, exact
    (:func:`torch.rot90` over ``(H, W)``); odd ``k`` needs square images."""

    name = "rotation4"
    param_names = ("k",)
    classes = 4

    def apply(self, images: Tensor, params: Tensor, fraction: float | Tensor = 1.0) -> Tensor:
        """Rotate each ``(C, H, W)`` image by its ``k``; ``(B, C, H, W)`` in and out."""
        k = self._classes(images, params, fraction).view(-1, 1, 1, 1)
        square = images.shape[-2] == images.shape[-1]
        if not square and bool((k % 2 == 1).any()):
            raise ValueError("rotation4 by an odd multiple of 90° needs square images.")
        out = images
        for quarter in (1, 2, 3) if square else (2,):
            out = torch.where(k == quarter, torch.rot90(images, quarter, dims=(-2, -1)), out)
        return out


@TRANSFORMS.register("flip")
class Flip(DiscreteTransformation):
    """Horizontal flip, ``flip`` in {0, 1}."""

    name = "flip"
    param_names = ("flip",)
    classes = 2

    def apply(self, images: Tensor, params: Tensor, fraction: float | Tensor = 1.0) -> Tensor:
        """Mirror left-right the images whose ``flip`` is 1; ``(B, C, H, W)`` in and out."""
        k = self._classes(images, params, fraction).view(-1, 1, 1, 1)
        return torch.where(k == 1, images.flip(-1), images)
