"""``rotation_supervised``: a positive control for the equivariance probes, not an SSL method.

An encoder trained *with supervision* to predict the transformation between two views, on the same
backbone, data and budget as the SSL methods. If the synthetic rotation probe
(``synthetic/rotation``) cannot read a high R² from this encoder, the probe, not the SSL methods,
is what fails (issue: "a positive control for the probes").

Views are made as the probes make theirs (:mod:`eqbench.protocols.views`): the loaded image is the
*context*; ``v1`` is its centre ``S × S`` crop and ``v2`` the centre crop of ``g_θ`` applied to the
whole context, so neither view has fill pixels when the context is large enough (load the images
at ``load_size ≥ context``; the shipped config loads at twice the view side). A small MLP on the
pair of mean patch tokens ``[f(v1), f(v2)]`` regresses θ (standardised), with the MSE loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.backbones.base import GRID_SIZE
from eqbench.data.base import center_crop
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.methods.base import Method, TrainBatch, register_method
from eqbench.transforms import build_transform

POOLS = ("avgpool", "cls", "grid")
#: Draws used to standardise the regression targets (fixed generator, so every run agrees).
TARGET_STAT_DRAWS = 4096


@dataclass
class RotationSupervisedOptions:
    """Options of the positive control.

    Attributes:
        transform: the transformation whose parameters are predicted (continuous only).
        transform_options: its ranges (default: the synthetic task's, rotation in [-45°, 45°]).
        head_dims: hidden widths of the MLP on the concatenated pair.
        pool: global feature of each view: ``avgpool`` (mean patch token), ``cls`` or ``grid``
            (patch tokens pooled to 2×2 cells, flattened; the probes' ``grid`` feature).
    """

    transform: str = "rotation"
    transform_options: dict[str, Any] = field(default_factory=lambda: {"degrees": [-45, 45]})
    head_dims: list[int] = field(default_factory=lambda: [512, 512])
    pool: str = "avgpool"

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ConfigError(f"rotation_supervised: pool must be one of {POOLS}: {self.pool!r}.")
        if any(d < 1 for d in self.head_dims):
            raise ConfigError("rotation_supervised: head_dims must be positive.")


class RotationSupervised(Method):
    """Supervised prediction of ``θ`` from ``(f(v1), f(g_θ v1))`` (see the module docstring).

    Args:
        encoder: the backbone.
        img_size: side of the views in pixels.
        options: :class:`RotationSupervisedOptions` fields.
    """

    def __init__(self, encoder: Encoder, img_size: int, options: dict[str, Any]) -> None:
        super().__init__()
        where = "method 'rotation_supervised' options"
        opts = from_dict(RotationSupervisedOptions, options, where)
        self.name = "rotation_supervised"
        self.encoder = encoder
        self.img_size = img_size
        self.pool = opts.pool
        self.transform = build_transform(opts.transform, img_size, **opts.transform_options)
        if self.transform.discrete:
            raise ConfigError(f"{where}: '{opts.transform}' is discrete; use a continuous one.")
        reference = self.transform.target(
            self.transform.sample(TARGET_STAT_DRAWS, torch.Generator().manual_seed(0))
        )  # (n, P)
        self.target_mean: Tensor
        self.target_std: Tensor
        self.register_buffer("target_mean", reference.mean(dim=0))
        self.register_buffer("target_std", reference.std(dim=0).clamp_min(1e-6))
        layers: list[nn.Module] = []
        width = 2 * encoder.embed_dim * (GRID_SIZE**2 if opts.pool == "grid" else 1)
        for hidden in opts.head_dims:
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, reference.shape[1]))
        self.head = nn.Sequential(*layers)
        self.options = {**to_dict(opts), "transform_options": self.transform.config()}

    @property
    def trained_feature(self) -> str | None:
        """The pooled feature the head reads."""
        return self.pool

    def views(self, batch: TrainBatch) -> tuple[Tensor, Tensor, Tensor]:
        """``(v1, v2, θ)``: the centre crops of the context and of ``g_θ(context)``."""
        context = batch.images.float().div(255.0)  # (B, 3, L, L)
        if context.shape[-1] < self.img_size:
            raise ConfigError(
                f"rotation_supervised: images are loaded at {context.shape[-1]} px, smaller than "
                f"the {self.img_size} px views. Set load_size to at least img_size (twice it "
                "keeps fill pixels out of rotated views)."
            )
        theta = self.transform.sample(context.shape[0], batch.generator).to(context.device)
        v1 = center_crop(context, self.img_size)
        v2 = center_crop(self.transform.apply(context, theta), self.img_size).clamp(0.0, 1.0)
        return v1.contiguous(), v2.contiguous(), theta

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """MSE between the head's prediction and the standardised ``θ``."""
        v1, v2, theta = self.views(batch)
        features = self.encoder(torch.cat([v1, v2]))
        f1, f2 = features.pooled(self.pool).chunk(2)  # (B, D) each
        prediction = self.head(torch.cat([f1, f2], dim=1)).float()  # (B, P)
        target = (self.transform.target(theta) - self.target_mean) / self.target_std
        loss = F.mse_loss(prediction, target)
        return {"loss": loss, "mse": loss.detach()}


@register_method(
    "rotation_supervised",
    paper="positive control after RotNet: Gidaris et al., ICLR 2018, arXiv 1803.07728",
)
def rotation_supervised(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """Positive control: supervised regression of the rotation between two views (the pretext of
    RotNet, Gidaris et al., ICLR 2018, arXiv 1803.07728, made continuous and relative)."""
    return RotationSupervised(encoder, img_size, options)
