"""Tests for :mod:`eqbench.transforms`: identities, composition, oracles, context sizes.

Registry-wide tests are parametrised over ``TRANSFORMS.names()``, so a newly registered
transformation is checked automatically.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from eqbench.errors import ConfigError
from eqbench.transforms import TRANSFORMS, Transformation, build_transform
from eqbench.transforms.geometric import (
    AffineTransformation,
    affine_to_theta,
    rotation_matrices,
    translation_matrices,
)
from eqbench.transforms.photometric import GaussianBlur

NAMES = TRANSFORMS.names()
AFFINE = [n for n in NAMES if issubclass(TRANSFORMS.get(n), AffineTransformation)]
# One-parameter subgroups: g_{s1θ}∘g_{s2θ} = g_{(s1+s2)θ} (se2 is a straight line, see below).
SUBGROUPS = ["rotation", "translation", "scale"]
SIZE = 32


def _images(n: int = 4, size: int = SIZE, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _smooth(n: int, size: int) -> Tensor:
    """Low-frequency test images: ``0.5 + 0.25·(sin(2πx/P + φ) + cos(2πy/P + ψ))``, P = 32."""
    coords = torch.arange(size, dtype=torch.float32)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    phase = torch.arange(n * 3, dtype=torch.float32).view(n, 3, 1, 1)
    w = 2 * math.pi / 32
    return 0.5 + 0.25 * (torch.sin(w * x + phase) + torch.cos(w * y + 0.7 * phase))


def _sample(t: Transformation, n: int, seed: int = 1) -> Tensor:
    return t.sample(n, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ registry-wide


@pytest.mark.parametrize("name", NAMES)
def test_fraction_zero_is_identity(name: str) -> None:
    t = build_transform(name, SIZE)
    images = _images()
    params = _sample(t, 4)
    torch.testing.assert_close(t.apply(images, params, 0.0), images, atol=1e-5, rtol=0)
    out = t.apply(images, params, torch.zeros(4))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_per_image_fraction_matches_scalar_fraction(name: str) -> None:
    """A ``(B,)`` fraction acts per image, exactly like a scalar on each image alone."""
    t = build_transform(name, SIZE)
    images, params = _images(), _sample(t, 4)
    fracs = [0.0, 1.0, 1.0, 0.0] if t.discrete else [0.0, 0.3, 1.0, 0.7]
    batched = t.apply(images, params, torch.tensor(fracs))
    for i, f in enumerate(fracs):
        single = t.apply(images[i : i + 1], params[i : i + 1], f)
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=0)
    full = t.apply(images, params)
    assert (full - images).abs().max() > 1e-3  # fraction 1 really transforms


@pytest.mark.parametrize("name", NAMES)
def test_sampling(name: str) -> None:
    t = build_transform(name, SIZE)
    params = _sample(t, 256, seed=3)
    assert params.shape == (256, len(t.param_names))
    assert params.dtype == torch.float32
    low, high = t.param_bounds()  # type: ignore[attr-defined]
    assert bool((params >= low - 1e-6).all()) and bool((params <= high + 1e-6).all())
    torch.testing.assert_close(params, _sample(t, 256, seed=3), atol=0, rtol=0)
    assert not torch.equal(params, _sample(t, 256, seed=4))
    # The samples fill the range (256 uniform draws reach its ends within 5 %).
    span = high - low
    assert bool((params.amin(0) < low + 0.05 * span).all())
    assert bool((params.amax(0) > high - 0.05 * span).all())
    if t.discrete:
        assert t.num_classes == int(high.item()) + 1
        assert torch.equal(params, params.round())
    out, returned = t(_images(), torch.Generator().manual_seed(5))
    assert out.shape == (4, 3, SIZE, SIZE)
    torch.testing.assert_close(t.target(returned), returned)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips(name: str) -> None:
    t = build_transform(name, SIZE)
    assert build_transform(name, SIZE, **t.config()).config() == t.config()


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="Unknown option 'bogus'"):
        build_transform(name, SIZE, bogus=[0, 1])


@pytest.mark.parametrize(
    ("name", "typo", "meant"),
    [("rotation", "degree", "degrees"), ("translation", "pixel", "pixels"),
     ("scale", "factors", "factor"), ("colour", "brigthness", "brightness"),
     ("blur", "sigmas", "sigma")],
)  # fmt: skip
def test_unknown_option_suggests(name: str, typo: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"Did you mean '{meant}'"):
        build_transform(name, SIZE, **{typo: [0, 1]})


@pytest.mark.parametrize(
    ("name", "options"),
    [("rotation", {"degrees": 45}), ("rotation", {"degrees": [10, -10]}),
     ("scale", {"factor": [0.0, 2.0]}), ("colour", {"hue": [-0.6, 0.1]}),
     ("colour", {"contrast": [-1.5, 0.4]}), ("blur", {"sigma": [-1, 1]})],
)  # fmt: skip
def test_bad_range_is_config_error(name: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build_transform(name, SIZE, **options)


# ------------------------------------------------------------------------------ geometric


@pytest.mark.parametrize("name", SUBGROUPS)
def test_matrices_compose(name: str) -> None:
    t = build_transform(name, SIZE)
    assert isinstance(t, AffineTransformation)
    params = _sample(t, 16)
    s1, s2 = torch.rand(16, dtype=torch.float64) * 0.5, torch.rand(16, dtype=torch.float64) * 0.5
    composed = t.matrices(params, s2) @ t.matrices(params, s1)
    torch.testing.assert_close(composed, t.matrices(params, s1 + s2), atol=1e-6, rtol=0)
    # ... and g_{-θ} undoes g_θ.
    eye = torch.eye(3, dtype=torch.float64).expand(16, 3, 3)
    torch.testing.assert_close(t.matrices(params, -1.0) @ t.matrices(params), eye)


def test_se2_matrices_are_translation_after_rotation() -> None:
    t = build_transform("se2", SIZE)
    assert isinstance(t, AffineTransformation)
    params, s = _sample(t, 16), 0.3
    expected = translation_matrices(s * params[:, 1], s * params[:, 2]) @ rotation_matrices(
        s * params[:, 0]
    )
    torch.testing.assert_close(t.matrices(params, s), expected, atol=1e-6, rtol=0)
    # On the subgroups (pure rotation or pure translation) its intermediates compose.
    for keep in ([0], [1, 2]):
        sub = torch.zeros_like(params)
        sub[:, keep] = params[:, keep]
        composed = t.matrices(sub, 0.25) @ t.matrices(sub, 0.5)
        torch.testing.assert_close(composed, t.matrices(sub, 0.75), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", SUBGROUPS)
def test_half_twice_equals_full_on_smooth_images(name: str) -> None:
    """Bilinear interpolation of ``f`` errs by at most ``(|f_xx| + |f_yy|)/8`` (unit pixels).

    For the test image ``|f_xx|, |f_yy| <= 0.25·(2π/32)² ≈ 0.0096``, so one resampling errs by
    ``<= 0.0024``; ``g_{θ/2}∘g_{θ/2}`` (two resamplings) and ``g_θ`` (one) differ by at most
    three times that, ``0.0072``; we allow 0.01. Compared only where neither result saw fill.
    """
    t = build_transform(name, 64)
    params = {
        "rotation": torch.tensor([[40.0], [-25.0]]),
        "translation": torch.tensor([[2.7, -1.3], [-2.2, 2.9]]),
        "scale": torch.tensor([[math.log(1.3)], [math.log(0.78)]]),
    }[name]
    images = _smooth(2, 64)
    full = t.apply(images, params)
    twice = t.apply(t.apply(images, params, 0.5), params, 0.5)
    ones = torch.ones(2, 1, 64, 64)
    interior = (t.apply(ones, params) > 1 - 1e-6) & (
        t.apply(t.apply(ones, params, 0.5), params, 0.5) > 1 - 1e-6
    )
    assert interior.float().mean() > 0.3
    err = ((full - twice).abs() * interior).max()
    assert err < 0.01
    assert ((full - images).abs() * interior).max() > 10 * err  # the check is not vacuous


def test_rotation_direction_matches_rot90() -> None:
    """Rotation by 90° is ``torch.rot90`` (counter-clockwise), as is rotation4 with ``k = 1``."""
    images = _images()
    rot = build_transform("rotation", SIZE).apply(images, torch.full((4, 1), 90.0))
    expected = torch.rot90(images, 1, dims=(-2, -1))
    torch.testing.assert_close(rot, expected, atol=1e-5, rtol=0)
    r4 = build_transform("rotation4", SIZE).apply(images, torch.ones(4, 1))
    assert torch.equal(r4, expected)


def test_translation_by_whole_pixels_is_a_shift() -> None:
    images = _images()
    out = build_transform("translation", SIZE).apply(images, torch.tensor([[3.0, -2.0]] * 4))
    expected = torch.zeros_like(images)
    expected[..., : SIZE - 2, 3:] = images[..., 2:, : SIZE - 3]  # right 3, up 2
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_scale_by_two_magnifies_about_the_centre() -> None:
    """Zoom ×2 of a 4×4 image with a bright 2×2 centre (pixel centres at ±0.5, ±1.5).

    Output pixel ``x = ±1.5`` samples the input at ``±0.75``: bilinear between 0 (at ±1.5) and 1
    (at ±0.5) gives 0.75; ``x = ±0.5`` samples ``±0.25``, inside the bright square, giving 1.
    """
    image = torch.zeros(1, 1, 4, 4)
    image[..., 1:3, 1:3] = 1.0
    out = build_transform("scale", 4).apply(image, torch.tensor([[math.log(2.0)]]))
    profile = torch.tensor([0.75, 1.0, 1.0, 0.75])
    torch.testing.assert_close(out[0, 0], torch.outer(profile, profile), atol=1e-6, rtol=0)


def test_theta_of_identity_is_identity() -> None:
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    torch.testing.assert_close(affine_to_theta(eye, 20, 30), eye[:, :2])


def _worst_params(name: str, t: AffineTransformation) -> Tensor:
    """Parameters at which the transformation reaches furthest into the context."""
    low, high = t.param_bounds()
    if name == "rotation":
        return torch.tensor([[45.0], [-45.0]])
    if name == "scale":
        return low.view(1, 1)
    if name == "translation":
        return torch.stack([low, high, torch.stack((low[0], high[1]))])
    if name == "se2":
        return torch.tensor([[45.0, low[1], low[2]], [-45.0, high[1], low[2]]])
    raise AssertionError(f"add the worst case of {name}")


@pytest.mark.parametrize("name", AFFINE)
@pytest.mark.parametrize("view", [64, 49, 37])
def test_context_size_has_no_fill_and_is_tight(name: str, view: int) -> None:
    t = build_transform(name, view)
    assert isinstance(t, AffineTransformation)
    params = _worst_params(name, t)
    side = t.context_size(view)
    assert (side - view) % 2 == 0

    def crop_min(context: int, p: Tensor) -> float:
        ones = torch.ones(p.shape[0], 1, context, context)
        out = t.apply(ones, p)
        top = (context - view) // 2
        return float(out[..., top : top + view, top : top + view].min())

    assert crop_min(side, params) > 1 - 1e-5
    assert crop_min(side, torch.cat([params, _sample(t, 64)])) > 1 - 1e-5
    assert crop_min(side - 2, params) < 1 - 1e-3  # two pixels less would show fill


def test_context_sizes_known_values() -> None:
    """``side = 2·reach + 1`` rounded up to the parity of the view, ``reach`` from the corner
    pixel centre ``h = (224 − 1)/2 = 111.5``."""
    rotation = build_transform("rotation", 224)
    assert rotation.context_size(224) == 318  # 2·111.5·√2 + 1 = 316.4 → 317 → even 318
    narrow = build_transform("rotation", 224, degrees=[-10, 10])
    assert narrow.context_size(224) == 260  # 223·(cos 10° + sin 10°) + 1 = 259.3
    assert build_transform("translation", 224).context_size(224) == 244  # 223 + 2·10 + 1
    assert build_transform("scale", 224).context_size(224) == 300  # 223 / 0.75 + 1 = 298.3
    assert build_transform("se2", 224).context_size(224) == 346  # (223 + 20)·√2 + 1 = 344.7
    assert build_transform("scale", 224, factor=[1.0, 2.0]).context_size(224) == 224
    for name in ("colour", "blur", "rotation4", "flip"):
        assert build_transform(name, 224).context_size(224) == 224


def test_translation_range_scales_with_image_size() -> None:
    low, high = build_transform("translation", 112).param_bounds()  # type: ignore[attr-defined]
    torch.testing.assert_close(high, torch.tensor([5.0, 5.0]))
    torch.testing.assert_close(low, torch.tensor([-5.0, -5.0]))


# ------------------------------------------------------------------------------- discrete


def test_rotation4() -> None:
    t, images = build_transform("rotation4", SIZE), _images()
    assert t.discrete and t.num_classes == 4
    k = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    out = t.apply(images, k)
    for i in range(4):
        assert torch.equal(out[i], torch.rot90(images[i], i, dims=(-2, -1)))
    x = images
    for _ in range(4):
        x = t.apply(x, torch.ones(4, 1))
    assert torch.equal(x, images)
    assert not torch.equal(t.apply(images, torch.ones(4, 1)), images)
    with pytest.raises(ValueError, match="fraction 0 or 1"):
        t.apply(images, k, 0.5)


def test_flip() -> None:
    t, images = build_transform("flip", SIZE), _images()
    assert t.discrete and t.num_classes == 2
    once = t.apply(images, torch.ones(4, 1))
    assert torch.equal(once, images.flip(-1)) and not torch.equal(once, images)
    assert torch.equal(t.apply(once, torch.ones(4, 1)), images)
    mixed = t.apply(images, torch.tensor([[0.0], [1.0], [0.0], [1.0]]))
    assert torch.equal(mixed[0], images[0]) and torch.equal(mixed[1], images[1].flip(-1))


# ---------------------------------------------------------------------------- photometric


def _colour_oracle(image: Tensor, offsets: Tensor) -> Tensor:
    b, c, s, h = (float(v) for v in offsets)
    out = TF.adjust_brightness(image, 1 + b)
    out = TF.adjust_contrast(out, 1 + c)
    out = TF.adjust_saturation(out, 1 + s)
    return TF.adjust_hue(out, h)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colour_matches_torchvision(seed: int) -> None:
    # Wide ranges so that brightness/contrast/saturation clamp for some pixels.
    wide = {"brightness": [-0.8, 0.8], "contrast": [-0.8, 0.8], "saturation": [-0.9, 1.5]}
    t = build_transform("colour", SIZE, hue=[-0.5, 0.5], **wide)
    images, params = _images(6, seed=seed), _sample(t, 6, seed=seed)
    frac = torch.tensor([1.0, 1.0, 0.5, 0.25, 1.0, 0.8])
    out = t.apply(images, params, frac)
    for i in range(6):
        expected = _colour_oracle(images[i], params[i] * frac[i])
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
    assert (out - images).abs().amax(dim=(1, 2, 3)).min() > 1e-2


@pytest.mark.parametrize("seed", [0, 1])
def test_blur_matches_torchvision(seed: int) -> None:
    t = build_transform("blur", SIZE)
    assert isinstance(t, GaussianBlur) and t.kernel_size == 13
    images = _images(5, seed=seed)
    params = torch.cat([_sample(t, 4, seed=seed), torch.tensor([[2.0]])])
    out = t.apply(images, params)
    for i in range(5):
        sigma = float(params[i, 0])
        expected = TF.gaussian_blur(images[i], [13, 13], [sigma, sigma])
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_blur_sigma_zero_is_exact_identity() -> None:
    t, images = build_transform("blur", SIZE), _images()
    assert torch.equal(t.apply(images, torch.zeros(4, 1)), images)
    assert torch.equal(t.apply(images, _sample(t, 4), 0.0), images)
    # Intermediate blur = blur with the scaled σ.
    params = torch.full((4, 1), 1.6)
    torch.testing.assert_close(t.apply(images, params, 0.5), t.apply(images, params / 2))
