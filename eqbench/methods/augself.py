"""``augself``: AugSelf, predicting the difference of augmentation parameters between views.

Lee et al., "Improving Transferability of Representations via Augmentation-Aware
Self-Supervision", NeurIPS 2021, arXiv 2111.09613 (code ``hankook/AugSelf``, ``SSObjective``).
On top of the base objective (SimCLR by default; ``base: vicreg`` works too), one MLP per
parameter group reads the *backbone* features of both views, concatenated, and predicts
``ω₁ − ω₂``; symmetrised as the official code: the pairs ``[f₁, f₂] → ω₁ − ω₂`` and
``[f₂, f₁] → ω₂ − ω₁`` both count. Regression terms are ``MSE(tanh(p), Δω)``; flip is a binary
"flips differ" classification. ``L = L_SSL + λ·Σ_groups L_group`` with ``λ = 1`` (paper) and the
paper's ImageNet groups ``crop`` and ``colour``.

Targets, from :class:`~eqbench.methods.augment.ViewParams`, normalised exactly as the official
``extract_diff`` (``transforms.py``; :func:`augself_targets`): ``crop`` — differences of the crop
centres (y, x; mirrored in x where the first view is flipped) and sizes (h, w), as fractions of the
image; ``colour`` — differences of the applied jitter offsets, each divided by the width of its
range (so a SimCLR-strength brightness offset in [-0.8, 0.8] becomes [-0.5, 0.5]; 0 when jitter
was off); ``blur`` — difference of σ (pixels at 224 px; 0 when blur was off); ``flip`` — 1 when
both views are flipped alike.

**eqbench defaults**: each predictor is ``Linear-BN-ReLU`` ×2 then ``Linear`` with hidden widths
512 (the official ``load_mlp`` with 3 layers); the features are the pooled backbone features
(``pool``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.errors import ConfigError
from eqbench.losses import augself_loss
from eqbench.methods.augment import AugmentConfig, ViewParams
from eqbench.methods.auxiliary import AuxiliaryMethod, AuxiliaryOptions
from eqbench.methods.base import Method, TrainBatch, projection_mlp, register_method

#: ``group -> (width, loss kind)``.
AUGSELF_GROUPS: dict[str, tuple[int, str]] = {
    "crop": (4, "regression"),
    "colour": (4, "regression"),
    "blur": (1, "regression"),
    "flip": (1, "binary"),
}


@dataclass
class AugSelfOptions(AuxiliaryOptions):
    """Options of AugSelf (the base objective's options sit beside them).

    Attributes:
        predict: parameter groups to predict (``crop``, ``colour``, ``blur``, ``flip``; paper:
            crop and colour).
        aug_weight: ``λ`` (paper 1.0).
        predictor_dims: hidden widths of each group's predictor (official code: 3 layers).
    """

    predict: list[str] = field(default_factory=lambda: ["crop", "colour"])
    aug_weight: float = 1.0
    predictor_dims: list[int] = field(default_factory=lambda: [512, 512])

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.predict) - set(AUGSELF_GROUPS))
        if unknown or not self.predict:
            raise ConfigError(
                f"AugSelf predict must be a non-empty subset of {sorted(AUGSELF_GROUPS)}, "
                f"got {self.predict}."
            )
        if self.aug_weight < 0:
            raise ConfigError(f"AugSelf aug_weight must be >= 0, got {self.aug_weight}.")


def jitter_widths(config: AugmentConfig) -> Tensor:
    """``(4,)`` widths of the brightness, contrast, saturation and hue offset ranges."""
    strengths = [config.brightness, config.contrast, config.saturation, config.hue]
    return torch.tensor([2.0 * s for s in strengths], dtype=torch.float32)


def augself_targets(p1: ViewParams, p2: ViewParams, group: str, config: AugmentConfig) -> Tensor:
    """The target of ``group`` for the pair (view 1, view 2), ``(B, width)`` float32.

    The official ``extract_diff`` (``hankook/AugSelf``, ``transforms.py`` lines 134-147 for
    crop and flip, ``_extract_w`` lines 105-119 for blur and colour; the crop box is
    ``RandomResizedCrop``'s ``[y0, x0, h, w]``, lines 21-27):

    * crop: ``[c1 − c2, s1 − s2]`` with ``c = (y0 + h/2, x0 + w/2)`` the centre and ``s = (h, w)``
      the size, fractions of the image; both centres' x is mirrored (``1 − x``) where the *first*
      view is flipped (lines 144-145 use view 1's flip mask for both);
    * colour: ``(factor − 1) / (range width)`` per brightness, contrast, saturation and hue
      (hue: offset / width), 0 where jitter was off, then view 1 − view 2;
    * blur: ``σ1 − σ2``, σ 0 where blur was off (σ in ``AugmentConfig.blur_sigma`` units);
    * flip: ``f1 == f2`` (line 147), a binary label.
    """
    if group == "crop":
        centres = []
        for p in (p1, p2):
            x0, y0, w, h = p.crop.float().unbind(dim=1)
            cx = x0 + w / 2
            centres.append((y0 + h / 2, torch.where(p1.flip, 1 - cx, cx)))
        (cy1, cx1), (cy2, cx2) = centres
        sizes = [torch.stack([p.crop[:, 3], p.crop[:, 2]], dim=1).float() for p in (p1, p2)]
        return torch.cat([torch.stack([cy1 - cy2, cx1 - cx2], dim=1), sizes[0] - sizes[1]], dim=1)
    if group == "colour":
        widths = jitter_widths(config)
        safe = torch.where(widths > 0, widths, torch.ones_like(widths))
        return (p1.jitter.float() - p2.jitter.float()) / safe
    if group == "blur":
        return (p1.blur_sigma - p2.blur_sigma).float().unsqueeze(1)
    if group == "flip":
        return (p1.flip == p2.flip).float().unsqueeze(1)
    raise ValueError(f"unknown AugSelf group {group!r}")


class AugSelf(AuxiliaryMethod):
    """AugSelf (arXiv 2111.09613): base objective + augmentation-difference prediction."""

    options_class = AugSelfOptions
    opts: AugSelfOptions

    def build_heads(self) -> None:
        width = 2 * self.encoder.embed_dim
        self.predictors = nn.ModuleDict(
            {
                group: projection_mlp(width, [*self.opts.predictor_dims, AUGSELF_GROUPS[group][0]])
                for group in self.opts.predict
            }
        )

    def aug_losses(
        self, f1: Tensor, f2: Tensor, p1: ViewParams, p2: ViewParams
    ) -> dict[str, Tensor]:
        """``{"aug_<group>": term}`` for features ``(B, D)`` of the views with params p1, p2."""
        pairs = torch.cat([torch.cat([f1, f2], dim=1), torch.cat([f2, f1], dim=1)])  # (2B, 2D)
        out = {}
        for group, predictor in self.predictors.items():
            config = self.augment.config
            target = torch.cat(
                [augself_targets(p1, p2, group, config), augself_targets(p2, p1, group, config)]
            )
            prediction = predictor(pairs).float()
            kind = AUGSELF_GROUPS[group][1]
            out[f"aug_{group}"] = augself_loss(prediction, target.to(prediction.device), kind)
        return out

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """``L_SSL + λ·Σ_groups L_group``."""
        v1, v2, p1, p2 = self.augment.with_params(batch.images, batch.generator)
        f1, f2 = self.pooled([v1, v2])  # (B, D) each
        out = self.base_losses(f1, f2)
        terms = self.aug_losses(f1, f2, p1, p2)
        out.update(terms)
        out["aug"] = torch.stack(list(terms.values())).sum()
        out["loss"] = out["ssl"] + self.opts.aug_weight * out["aug"]
        return out


@register_method(
    "augself",
    paper="AugSelf: Lee et al., NeurIPS 2021, arXiv 2111.09613",
    test_options={
        "projector_dims": [32, 16],
        "predictor_dims": [16],
        "predict": ["crop", "colour", "blur", "flip"],
    },
)
def augself(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """AugSelf (arXiv 2111.09613): augmentation-difference prediction added to SimCLR."""
    return AugSelf("augself", encoder, img_size, options)
