"""Augmentation parameters and the equivariant / reconstruction baselines (E-SSL, AugSelf,
EquiMod, SIE, MAE): their losses against hand-computed values or references written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from optional import import_or_skip

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


pytestmark = pytest.mark.usefixtures("one_thread")


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
#: The local crops' (last two "multi" entries) changed since with their blur σ, which now scales
#: with local_size / 96 as DINO's (was local_size / 224); their draws did not.
BEFORE_PARAMS = {
    "vicreg": [(7585.01570597128, 22721.33569574799), (7919.885475836752, 23721.368617661064)],
    "simclr": [(6011.408115183672, 18008.814209541335), (9209.179805961776, 27618.051371347057)],
    "multi": [
        (9885.629993502916, 29606.63079706429),
        (8632.178526213393, 25887.721779838204),
        (2403.178183634225, 7253.935379123019),
        (2251.3494432029547, 6783.318643863313),
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


# ------------------------------------------------------------------------------------- losses
def test_augself_loss_by_hand() -> None:
    from eqbench.losses import augself_loss

    prediction = torch.tensor([[0.0, 1.0], [-1.0, 2.0]])
    target = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
    squashed = [[0.0, math.tanh(1.0)], [-math.tanh(1.0), math.tanh(2.0)]]
    expected = (0.25 + squashed[0][1] ** 2 + squashed[1][0] ** 2 + (squashed[1][1] - 1.0) ** 2) / 4
    assert float(augself_loss(prediction, target)) == pytest.approx(expected, rel=1e-6)
    logits, labels = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [0.0]])
    bce = (math.log(2.0) + math.log(1 + math.exp(2.0))) / 2
    assert float(augself_loss(logits, labels, "binary")) == pytest.approx(bce, rel=1e-6)


def sie_reference(i1, i2, e1, e2, pred, s=10.0, f=0.45, mu=10.0, nu=1.0):  # type: ignore[no-untyped-def]
    """The official SIE loss (facebookresearch/SIE, src/models.py, class SIE), transcribed."""

    def off_diagonal(m: torch.Tensor) -> torch.Tensor:
        n = m.shape[0]
        return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    batch = i1.shape[0]
    repr_inv = F.mse_loss(i1, i2)
    repr_equi = F.mse_loss(pred, e2)
    p = pred - pred.mean(dim=0)
    pred_std = torch.mean(F.relu(1 - torch.sqrt(p.var(dim=0) + 0.0001))) / 2
    x, y = torch.cat((i1, e1), dim=1), torch.cat((i2, e2), dim=1)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 0.0001), torch.sqrt(y.var(dim=0) + 0.0001)
    std = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x, cov_y = (x.T @ x) / (batch - 1), (y.T @ y) / (batch - 1)
    cov = (
        off_diagonal(cov_x).pow(2).sum() / cov_x.shape[0]
        + off_diagonal(cov_y).pow(2).sum() / cov_x.shape[0]
    )
    return s * repr_inv + f * s * repr_equi + mu * std + mu * pred_std + nu * cov


def test_sie_loss_matches_the_official_formula() -> None:
    from eqbench.losses import SIELoss

    gen = torch.Generator().manual_seed(0)
    i1, i2 = torch.randn(16, 6, generator=gen), torch.randn(16, 6, generator=gen) * 0.3
    e1, e2, pred = (torch.randn(16, 4, generator=gen) * 0.5 for _ in range(3))
    loss = SIELoss(gather_distributed=False)
    total = loss.weighted(loss.terms(i1, i2, e1, e2, pred))
    torch.testing.assert_close(total, sie_reference(i1, i2, e1, e2, pred), rtol=1e-5, atol=1e-6)


def test_sie_loss_vicreg_part_matches_lightly() -> None:
    """With equal equivariant parts, a weightless equivariance term and a prediction of large
    variance, SIE's loss is VICReg's on the whole embeddings (lightly's VICRegLoss as oracle);
    the invariance there averages over 9 channels of which 8 differ, hence ``25·8/9``."""
    lightly_loss = import_or_skip("lightly", "lightly.loss")
    from eqbench.losses import SIELoss

    gen = torch.Generator().manual_seed(1)
    i1, i2 = torch.randn(32, 8, generator=gen), torch.randn(32, 8, generator=gen)
    e = torch.randn(32, 1, generator=gen)
    pred = torch.randn(32, 1, generator=gen) * 10  # std >> 1: no hinge
    loss = SIELoss(25 * 8 / 9, equi_factor=0, var_weight=25, cov_weight=1, gather_distributed=False)
    ours = loss.weighted(loss.terms(i1, i2, e, e, pred))
    x, y = torch.cat([i1, e], dim=1), torch.cat([i2, e], dim=1)
    reference = lightly_loss.VICRegLoss(lambda_param=25, mu_param=25, nu_param=1)(x, y)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_mae_loss_by_hand() -> None:
    from eqbench.losses import masked_patch_mse, patchify

    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    patches = patchify(images, 2)
    assert patches.shape == (2, 4, 12)
    # patch (row 0, col 1) of image 0: pixels (y, x, c) for y in 0..1, x in 2..3
    expected = [images[0, c, y, x] for y in (0, 1) for x in (2, 3) for c in range(3)]
    assert patches[0, 1].tolist() == torch.stack(expected).tolist()
    target = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])  # (1, 2, 2)
    prediction = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, False]])  # only patch 0 counts
    # raw: mean((0-1)², (0-3)²) = 5; normalised: target (−1/√2, 1/√2)·... var = 2 → (−√½, √½)
    assert float(masked_patch_mse(prediction, target, mask, norm_pix=False)) == pytest.approx(5.0)
    norm = (torch.tensor([1.0, 3.0]) - 2.0) / (2.0 + 1e-6) ** 0.5
    assert float(masked_patch_mse(prediction, target, mask)) == pytest.approx(
        float(norm.pow(2).mean())
    )


def test_equimod_loss_matches_the_official_ntxent() -> None:
    """EquiMod's equivariant loss is the official NTXentLoss(cat[yt, yt_hat]) (src/loss.py)."""
    from eqbench.losses import NTXentLoss

    gen = torch.Generator().manual_seed(2)
    yt, yhat = torch.randn(10, 5, generator=gen), torch.randn(10, 5, generator=gen)
    z = F.normalize(torch.cat([yt, yhat]))
    sim = z @ z.T / 0.2 - 1e8 * torch.eye(20)
    labels = torch.cat([torch.arange(10, 20), torch.arange(0, 10)])
    reference = F.cross_entropy(sim, labels)
    ours = NTXentLoss(0.2, gather_distributed=False)(yt, yhat)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ methods
def micro(name: str, **options: object) -> object:
    from eqbench.backbones import create_encoder
    from eqbench.methods import build_method

    torch.manual_seed(0)
    return build_method(name, create_encoder("micro_vit", img_size=IMG), IMG, dict(options))


def test_essl_rotation_loss_is_cross_entropy_of_the_drawn_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eqbench.methods import TrainBatch

    method = micro("essl", projector_dims=[16, 8], predictor_dims=[8], rotation_weight=0.4)
    seen: dict[str, torch.Tensor] = {}
    original = method.rotation.apply  # type: ignore[attr-defined]

    def spy(images: torch.Tensor, params: torch.Tensor, fraction: float = 1.0) -> torch.Tensor:
        seen["k"] = params.clone()
        return original(images, params, fraction)

    monkeypatch.setattr(method.rotation, "apply", spy)  # type: ignore[attr-defined]
    method.eval()
    images = (torch.rand(8, 3, IMG, IMG, generator=torch.Generator().manual_seed(0)) * 255).byte()
    with torch.no_grad():
        out = method.training_step(TrainBatch(images, torch.Generator().manual_seed(0)))  # type: ignore[attr-defined]
    assert set(seen["k"].flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert float(out["loss"]) == pytest.approx(float(out["ssl"] + 0.4 * out["rotation"]), rel=1e-6)
    assert 0.5 < float(out["rotation"]) < 3.0  # ~log 4 at init


def test_essl_rotation_head_is_the_official_one() -> None:
    # rdangovs/essl imagenet/simclr/main.py lines 192-200 (ResNet-50 width 2048)
    official = torch.nn.Sequential(
        torch.nn.Linear(2048, 2048),
        torch.nn.LayerNorm(2048),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(2048, 2048),
        torch.nn.LayerNorm(2048),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(2048, 128),
        torch.nn.LayerNorm(128),
        torch.nn.Linear(128, 4),
    )
    from eqbench.methods.essl import ESSLOptions, rotation_head

    ours = rotation_head(2048, ESSLOptions().predictor_dims)
    assert [type(m) for m in ours] == [type(m) for m in official]
    shapes = [tuple(p.shape) for p in ours.parameters()]
    assert shapes == [tuple(p.shape) for p in official.parameters()]
    ours.load_state_dict(official.state_dict())
    x = torch.randn(5, 2048)
    torch.testing.assert_close(ours(x), official(x))
    method = micro("essl", projector_dims=[16, 8], predictor_dims=[16, 16, 8])
    layers = list(method.predictor)  # type: ignore[attr-defined]
    assert [type(m).__name__ for m in layers][-3:] == ["Linear", "LayerNorm", "Linear"]
    assert layers[-1].out_features == 4


def official_extract_diff(p1, p2, config):  # type: ignore[no-untyped-def]
    """hankook/AugSelf ``transforms.extract_diff`` (lines 134-147) and ``_extract_w`` (lines
    105-119), transcribed onto eqbench's parameters: the crop is ``[y0, x0, h, w]`` as its
    ``RandomResizedCrop`` returns, a jitter factor is ``1 + offset``."""
    crop1 = p1.crop[:, [1, 0, 3, 2]].clone()
    crop2 = p2.crop[:, [1, 0, 3, 2]].clone()
    f1, f2 = p1.flip, p2.flip
    center1 = crop1[:, :2] + crop1[:, 2:] / 2
    center2 = crop2[:, :2] + crop2[:, 2:] / 2
    center1[f1, 1] = 1 - center1[f1, 1]
    center2[f1, 1] = 1 - center2[f1, 1]
    widths = torch.tensor(
        [2 * config.brightness, 2 * config.contrast, 2 * config.saturation, 2 * config.hue]
    )
    return {
        "crop": torch.cat([center1 - center2, crop1[:, 2:] - crop2[:, 2:]], 1),
        "flip": (f1 == f2).float().unsqueeze(-1),
        "colour": p1.jitter / widths - p2.jitter / widths,
        "blur": (p1.blur_sigma - p2.blur_sigma).unsqueeze(-1),
    }


def test_augself_targets_match_extract_diff() -> None:
    from eqbench.methods.augself import augself_targets

    config = build_augment_config({"blur_p": [0.5, 0.5]}, SIMCLR_AUGMENT)
    augment = TwoViewAugment(config, IMG)
    _, _, p1, p2 = augment.with_params(random_images(32), torch.Generator().manual_seed(0))
    assert bool(p1.flip.any()) and bool((p1.flip != p2.flip).any())
    for a, b in ((p1, p2), (p2, p1)):
        reference = official_extract_diff(a, b, config)
        for group, expected in reference.items():
            torch.testing.assert_close(augself_targets(a, b, group, config), expected)
    colour = augself_targets(p1, p2, "colour", config)
    assert float(colour.abs().max()) <= 1.0  # SimCLR offsets up to 0.8 differ by 1.6 unscaled
    torch.testing.assert_close(
        augself_targets(p1, p2, "colour", config), -augself_targets(p2, p1, "colour", config)
    )


def test_sie_operator_and_param_scaling() -> None:
    from eqbench.methods.sie import HyperOperator

    method = micro("sie", expander_dims=[16, 8])
    theta = torch.tensor([[-45.0], [0.0], [45.0]])
    torch.testing.assert_close(method.scaled_params(theta), torch.tensor([[-1.0], [0.0], [1.0]]))  # type: ignore[attr-defined]
    # the official hypernetwork (SIE src/hypernetwork.py lines 17-20, --hypernetwork linear,
    # no --bias-hypernet): one bias-free Linear from t to the d×d operator
    linears = [m for m in method.predictor.modules() if isinstance(m, torch.nn.Linear)]  # type: ignore[union-attr]
    assert len(linears) == 1 and linears[0].bias is None
    assert linears[0].weight.shape == (4 * 4, 1)  # d_e = 8 · (D/2) / D = 4
    op = HyperOperator(1, 3)
    with torch.no_grad():
        op.net.weight.copy_(torch.eye(3).flatten().unsqueeze(1) * 2)
    e = torch.randn(2, 3)
    torch.testing.assert_close(op(e, torch.ones(2, 1)), 2 * e)
    torch.testing.assert_close(op(e, torch.zeros(2, 1)), torch.zeros(2, 3))  # no bias


def test_mae_masks_three_quarters_and_encodes_only_the_visible() -> None:
    from eqbench.methods.mae import random_keep, sincos_pos_embed

    keep, mask = random_keep(4, 16, 0.75, torch.Generator().manual_seed(0))
    assert keep.shape == (4, 4) and mask.sum(dim=1).tolist() == [12] * 4
    assert not mask.gather(1, keep).any()
    method = micro("mae", decoder_dim=16, decoder_depth=1, decoder_heads=2)
    view = torch.rand(2, 3, 64, 64)
    tokens, grid = method.encoder.forward_visible(view, keep[:2])  # type: ignore[attr-defined]
    assert grid == (4, 4) and tokens.shape == (2, 1 + 4, 64)
    # the visible tokens do not depend on the removed patches' pixels
    changed = view.clone()
    removed = int(mask[0].nonzero()[0])
    row, col = divmod(removed, 4)
    changed[:, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] = 0.0
    again, _ = method.encoder.forward_visible(changed, keep[:2])  # type: ignore[attr-defined]
    torch.testing.assert_close(tokens[0], again[0])
    pos = sincos_pos_embed(16, (2, 3))
    assert pos.shape == (6, 16) and float(pos[0, :4].abs().sum()) == 0.0  # sin(0)
