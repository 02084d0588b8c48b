"""``tir+<base>``: transformed-image reconstruction on top of a joint-embedding method.

Wang et al., "Self-Supervised Learning Based on Transformed Image Reconstruction for
Equivariance-Coherent Feature Representation", AAAI-26, arXiv 2503.18753 (no public code; this
follows eqbench's ``method.md``). This module holds TIR's parts and ``tir+<objective>`` for every
two-view objective in :data:`~eqbench.methods.base.OBJECTIVES` (VICReg, SimCLR and any registered
later: the registry resolves ``tir+<name>`` on lookup); :mod:`eqbench.methods.tir_distill` puts
the same parts on DINO, iBOT and DINOv2 (``tir+dino``, ``tir+ibot``, ``tir+dinov2``).

Views: ``v1 = A1(I)``, ``u = A2(I)``, ``v2 = g_θ(u)`` with ``g`` an extra transformation (default
rotation, θ uniform in [-45°, 45°]) applied to ``u`` only. Targets: the intermediate images
``u_k = g_{kθ/(K+1)}(u)``, ``k = 1..K`` (``K = 2``).

Features: backbone patch tokens ``(B, N, D)`` → linear head to ``d_patch`` per token → split into
``z_inv`` (``d_patch − d_equi``) and ``z_equi`` (``d_equi``). The mean-pooled ``z_inv`` of both
views feeds the base objective in place of the backbone output. ``z_equi`` of both views
(gradients through both) is concatenated per token, ``(B, N, 2·d_equi)``, and decoded by ``K``
independent decoders (:class:`TIRDecoder`) into the ``K`` targets.

Loss (paper Eq. 3–4): ``L = L_SSL + λ·L_recon`` with ``L_recon = (1/K) Σ_k ‖û_k − u_k‖²``, the
squared L2 norm of each image's difference (summed over channels and pixels), averaged over the
batch, and ``λ = 1`` (the paper reports ``λ > 5`` as unstable, which fits a loss on this scale).
``recon_reduction: mean`` keeps the per-pixel mean instead (an earlier eqbench default): at
initialisation its gradient on the encoder is thousands of times smaller than the SSL loss's, so
TIR then trains like its matched control. At log steps the method reports ``recon_grad_share``,
``‖∇L_rec‖ / (‖∇L_SSL‖ + ‖∇L_rec‖)`` (``L_rec`` weighted by ``λ``) for the gradients reaching the
backbone's patch tokens, i.e. the share of the encoder's gradient that reconstruction drives.

**eqbench defaults** (the paper leaves them open): ``d_patch`` = the backbone width ``D``;
``d_equi = d_patch / 2`` when the base is VICReg, ``d_patch / 4`` otherwise; decoders map each
token to a ``p×p×16`` patch, fold to ``(16, H, W)`` and apply four 3×3 convs with GELU between,
ending in 3 channels; targets are normalised with the encoder's input mean/std
(``target_norm="encoder"``). With ``recon_weight: 0`` the
decoders are skipped: the matched control (same transformed second view, no reconstruction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.methods.augment import TwoViewAugment, build_augment_config
from eqbench.methods.base import (
    METHODS,
    OBJECTIVES,
    Method,
    MethodEntry,
    TrainBatch,
    build_objective,
    split_options,
)
from eqbench.transforms import Transformation, build_transform

#: The paper of every ``tir+<base>``.
TIR_PAPER = "TIR: Wang et al., AAAI-26, arXiv 2503.18753"
TARGET_NORMS = ("encoder", "none")
#: ``sum``: ‖û − u‖² per image, mean over the batch (paper Eq. 3–4); ``mean``: per-pixel mean.
RECON_REDUCTIONS = ("sum", "mean")


@dataclass
class TIROptions:
    """Options of the TIR wrapper (the base objective's options sit beside them).

    Attributes:
        transform: the extra transformation ``g`` (``eqbench ls transforms``; continuous only).
        transform_options: its ranges, e.g. ``{"degrees": [-45, 45]}``.
        num_targets: ``K``, the number of intermediate targets (paper: 2).
        d_patch: width of the per-token head (default: the backbone width).
        d_equi: width of the equivariant part (default: ``d_patch/2`` for VICReg, else ``/4``).
        recon_weight: ``λ`` (paper: 1; above 5 was unstable). 0 skips the decoders.
        decoder_channels: ``c``, channels of the decoders' feature maps (default 16).
        target_norm: ``encoder`` (normalise targets with the encoder's mean/std) or ``none``.
        recon_reduction: ``sum`` (paper Eq. 3–4: squared L2 norm per image, mean over the
            batch) or ``mean`` (per-pixel mean, ``C·H·W`` times weaker).
        augment: overrides of the base method's augmentations (A1, A2).
    """

    transform: str = "rotation"
    transform_options: dict[str, Any] = field(default_factory=dict)
    num_targets: int = 2
    d_patch: int | None = None
    d_equi: int | None = None
    recon_weight: float = 1.0
    decoder_channels: int = 16
    target_norm: str = "encoder"
    recon_reduction: str = "sum"
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_targets < 1:
            raise ConfigError(f"TIR num_targets (K) must be >= 1, got {self.num_targets}.")
        if self.recon_weight < 0:
            raise ConfigError(f"TIR recon_weight must be >= 0, got {self.recon_weight}.")
        if self.decoder_channels < 1:
            raise ConfigError("TIR decoder_channels must be >= 1.")
        if self.target_norm not in TARGET_NORMS:
            raise ConfigError(f"TIR target_norm must be one of {TARGET_NORMS}.")
        if self.recon_reduction not in RECON_REDUCTIONS:
            raise ConfigError(
                f"TIR recon_reduction must be one of {RECON_REDUCTIONS}, "
                f"got {self.recon_reduction!r}."
            )


@dataclass
class TIRViews:
    """The images of one TIR step (all ``(B, 3, S, S)`` in [0, 1] except ``theta``).

    Attributes:
        v1: ``A1(I)``.
        u: ``A2(I)``.
        theta: ``(B, P)`` parameters of ``g``.
        v2: ``g_θ(u)``.
        targets: ``[g_{kθ/(K+1)}(u) for k = 1..K]``.
    """

    v1: Tensor
    u: Tensor
    theta: Tensor
    v2: Tensor
    targets: list[Tensor]


class TIRDecoder(nn.Module):
    """One deliberately weak decoder: a per-token linear layer, then four 3×3 convolutions.

    Args:
        in_dim: token width (``2·d_equi``).
        patch_size: ``p``, pixels per token side.
        channels: ``c``, channels of the folded map and of the hidden convolutions.
    """

    def __init__(self, in_dim: int, patch_size: int, channels: int = 16) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.channels = channels
        self.linear = nn.Linear(in_dim, patch_size * patch_size * channels)
        self.convs = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, 3, 3, padding=1),
        )
        # channels-last convolutions run about 1.8x faster on the CPU (oneDNN) and use the
        # tensor cores' preferred layout on GPUs
        self.convs.to(memory_format=torch.channels_last)

    def fold(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """The linear layer and the fold: tokens ``(B, h·w, in_dim)`` → ``(B, c, h·p, w·p)``;
        token ``(i, j)`` fills pixels ``[i·p, (i+1)·p) × [j·p, (j+1)·p)``."""
        batch = tokens.shape[0]
        (h, w), p, c = grid, self.patch_size, self.channels
        x = self.linear(tokens)  # (B, h·w, p·p·c)
        x = x.view(batch, h, w, p, p, c).permute(0, 1, 3, 2, 4, 5)  # (B, h, p, w, p, c)
        # one copy straight into the channels-last layout the convolutions read (a permuted view
        # of (B, h·p, w·p, c)), instead of an NCHW copy and a second channels-last one
        return x.reshape(batch, h * p, w * p, c).permute(0, 3, 1, 2)

    def forward(self, tokens: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Decode tokens ``(B, h·w, in_dim)`` on an ``(h, w)`` grid into ``(B, 3, H, W)``.

        The folded map is ``(c, h·p, w·p)``; when that is not ``size`` (image side not a
        multiple of ``p``, CNN backbones) it is resized bilinearly to ``size`` first.
        """
        x = self.fold(tokens, grid)  # (B, c, h·p, w·p)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.convs(x.contiguous(memory_format=torch.channels_last))  # (B, 3, H, W)


def resolve_split(opts: TIROptions, base: str, embed_dim: int, where: str) -> tuple[int, int]:
    """``(d_patch, d_equi)``: the options, or the backbone width and half (VICReg) or a quarter.

    Raises:
        ConfigError: unless ``0 < d_equi < d_patch``.
    """
    d_patch = opts.d_patch or embed_dim
    d_equi = opts.d_equi or (d_patch // 2 if base == "vicreg" else d_patch // 4)
    if not 0 < d_equi < d_patch:
        raise ConfigError(
            f"{where}: need 0 < d_equi < d_patch, got d_equi={d_equi}, "
            f"d_patch={d_patch}. Lower d_equi or raise d_patch."
        )
    return d_patch, d_equi


def build_tir_transform(opts: TIROptions, img_size: int, where: str) -> Transformation:
    """The extra transformation ``g``; it must be continuous (it has intermediate states)."""
    transform = build_transform(opts.transform, img_size, **opts.transform_options)
    if transform.discrete:
        raise ConfigError(
            f"{where}: transform '{opts.transform}' is discrete and has no intermediate "
            "states. Use rotation, translation, se2, scale, colour or blur."
        )
    return transform


def transform_and_targets(
    transform: Transformation, u: Tensor, theta: Tensor, num_targets: int
) -> tuple[Tensor, list[Tensor]]:
    """``v2 = g_θ(u)`` and the targets ``[g_{kθ/(K+1)}(u) for k = 1..K]``."""
    k_total = num_targets + 1
    targets = [transform.apply(u, theta, k / k_total) for k in range(1, k_total)]
    return transform.apply(u, theta), targets


def reconstruction_error(prediction: Tensor, target: Tensor, reduction: str = "sum") -> Tensor:
    """One target's reconstruction loss for predictions and targets ``(B, 3, S, S)``.

    ``sum``: ``(1/B) Σ_b ‖û_b − u_b‖²``, the squared L2 norm of each image's difference summed
    over channels and pixels, averaged over the batch (Wang et al., arXiv 2503.18753, Eq. 3–4);
    ``mean``: the per-pixel mean squared error, ``1/(3·S·S)`` of that.
    """
    squared = (prediction.float() - target.float()).pow(2)  # (B, 3, S, S)
    if reduction == "sum":
        return squared.flatten(1).sum(dim=1).mean()
    if reduction == "mean":
        return squared.mean()
    raise ConfigError(f"Unknown reconstruction reduction {reduction!r}; use {RECON_REDUCTIONS}.")


def reconstruction_losses(
    decoders: nn.ModuleList,
    e1: Tensor,
    e2: Tensor,
    grid: tuple[int, int],
    targets: list[Tensor],
    normalise: Callable[[Tensor], Tensor],
    reduction: str = "sum",
) -> dict[str, Tensor]:
    """``{"recon_k": ‖û_k − u_k‖², "recon": (1/K) Σ_k recon_k}`` (:func:`reconstruction_error`).

    Args:
        decoders: the ``K`` :class:`TIRDecoder`.
        e1: ``z_equi`` of the first view, ``(B, N, d_equi)``.
        e2: ``z_equi`` of the second view, ``(B, N, d_equi)``.
        grid: the token grid ``(h, w)``.
        targets: the ``K`` target images ``(B, 3, S, S)`` in [0, 1].
        normalise: maps a target into the space the decoders predict.
        reduction: ``sum`` (paper) or ``mean`` (per pixel).
    """
    pair = torch.cat([e1, e2], dim=-1)  # (B, N, 2·d_equi)
    size = (targets[0].shape[-2], targets[0].shape[-1])
    out: dict[str, Tensor] = {}
    terms = []
    for k, (decoder, target) in enumerate(zip(decoders, targets, strict=True)):
        prediction = decoder(pair, grid, size)  # (B, 3, S, S)
        term = reconstruction_error(prediction, normalise(target), reduction)
        out[f"recon_{k + 1}"] = term
        terms.append(term)
    out["recon"] = torch.stack(terms).mean()
    return out


def recon_grad_share(ssl: Tensor, weighted_recon: Tensor, tokens: Tensor) -> Tensor:
    """``‖∇_t λL_rec‖ / (‖∇_t L_SSL‖ + ‖∇_t λL_rec‖)`` for the backbone's output tokens ``t``.

    A cheap estimate (backward through the heads and decoders only, at log steps) of how much of
    the encoder's gradient comes from reconstruction: every encoder parameter's gradient is the
    same backward pass applied to these token gradients. Leaves no gradient in ``.grad``.
    """
    if not tokens.requires_grad:
        return torch.full((), float("nan"), device=tokens.device)
    g_ssl = torch.autograd.grad(ssl, tokens, retain_graph=True, allow_unused=True)[0]
    g_rec = torch.autograd.grad(weighted_recon, tokens, retain_graph=True, allow_unused=True)[0]
    n_ssl = g_ssl.float().norm() if g_ssl is not None else tokens.new_zeros(()).float()
    n_rec = g_rec.float().norm() if g_rec is not None else tokens.new_zeros(()).float()
    return (n_rec / (n_ssl + n_rec).clamp_min(1e-30)).detach()


class TIR(Method):
    """TIR around a base objective (``tir+vicreg``, ``tir+simclr``).

    Args:
        base: name of the base objective in :data:`~eqbench.methods.base.OBJECTIVES`.
        encoder: the backbone.
        img_size: side of the views in pixels.
        options: :class:`TIROptions` fields and the base objective's options, mixed.
    """

    def __init__(self, base: str, encoder: Encoder, img_size: int, options: dict[str, Any]):
        super().__init__()
        self.name = f"tir+{base}"
        where = f"method '{self.name}' options"
        objective_cls = OBJECTIVES.get(base)
        own, objective_options = split_options(
            options, [TIROptions, objective_cls.options_class], where
        )
        opts = from_dict(TIROptions, own, where)
        self.encoder = encoder
        self.d_patch, self.d_equi = resolve_split(opts, base, encoder.embed_dim, where)
        self.num_targets = opts.num_targets
        self.recon_weight = opts.recon_weight
        self.target_norm = opts.target_norm
        self.recon_reduction = opts.recon_reduction
        self.transform = build_tir_transform(opts, img_size, where)
        augment_config = build_augment_config(opts.augment, objective_cls.augment_defaults)
        self.augment = TwoViewAugment(augment_config, img_size)
        self.head = nn.Linear(encoder.embed_dim, self.d_patch)
        self.objective = build_objective(base, self.d_inv, objective_options, where)
        self.decoders = nn.ModuleList(
            TIRDecoder(2 * self.d_equi, encoder.patch_size, opts.decoder_channels)
            for _ in range(self.num_targets)
        )
        self.has_unused_parameters = self.recon_weight == 0
        self.options = {
            **to_dict(opts),
            "d_patch": self.d_patch,
            "d_equi": self.d_equi,
            "transform_options": self.transform.config(),
            "augment": self.augment.describe(),
            **to_dict(from_dict(objective_cls.options_class, objective_options, where)),
        }

    @property
    def d_inv(self) -> int:
        """Width of the invariant part, ``d_patch − d_equi``."""
        return self.d_patch - self.d_equi

    def views(self, batch: TrainBatch) -> TIRViews:
        """``v1``, ``u``, θ, ``v2 = g_θ(u)`` and the targets ``g_{kθ/(K+1)}(u)``.

        Draws, in order from ``batch.generator``: the two base views, then θ.
        """
        v1, u = self.augment(batch.images, batch.generator)  # (B, 3, S, S) each
        theta = self.transform.sample(u.shape[0], batch.generator).to(u.device)  # (B, P)
        v2, targets = transform_and_targets(self.transform, u, theta, self.num_targets)
        return TIRViews(v1=v1, u=u, theta=theta, v2=v2, targets=targets)

    def split(self, patch: Tensor) -> tuple[Tensor, Tensor]:
        """Head + split of patch tokens ``(B, N, D)`` → ``z_inv`` ``(B, N, d_inv)``,
        ``z_equi`` ``(B, N, d_equi)``."""
        z = self.head(patch)  # (B, N, d_patch)
        z_inv, z_equi = z.split([self.d_inv, self.d_equi], dim=-1)
        return z_inv, z_equi

    @property
    def trained_feature(self) -> str | None:
        """``avgpool``: the base loss sees the mean of the patch tokens' ``z_inv``."""
        return "avgpool"

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """``L_SSL(z̄_inv(v1), z̄_inv(v2)) + λ·L_recon``, with the parts for logging."""
        views = self.views(batch)
        features = self.encoder(torch.cat([views.v1, views.v2]))  # patch: (2B, N, D)
        z_inv, z_equi = self.split(features.patch)
        g1, g2 = z_inv.mean(dim=1).chunk(2)  # (B, d_inv) each
        ssl = self.objective(g1, g2)
        out = {"loss": ssl["loss"], "ssl": ssl["loss"]}
        out.update({k: v for k, v in ssl.items() if k != "loss"})
        if self.recon_weight == 0:
            return out
        e1, e2 = z_equi.chunk(2)  # (B, N, d_equi) each
        recon = reconstruction_losses(
            self.decoders,
            e1,
            e2,
            features.grid,
            views.targets,
            self.normalise_target,
            self.recon_reduction,
        )
        out.update(recon)
        weighted = self.recon_weight * recon["recon"]
        if batch.diagnostics:
            out["recon_grad_share"] = recon_grad_share(ssl["loss"], weighted, features.patch)
        out["loss"] = ssl["loss"] + weighted
        return out

    def normalise_target(self, target: Tensor) -> Tensor:
        """A target image ``(B, 3, S, S)`` in [0, 1] in the space the decoders predict."""
        return self.encoder.normalize(target) if self.target_norm == "encoder" else target


def tir_entry(base: str) -> MethodEntry:
    """The :data:`~eqbench.methods.base.METHODS` entry of ``tir+<base>`` for a two-view
    objective ``base``: the base's test options, TIR's paper."""

    def factory(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
        return TIR(base, encoder, img_size, options)

    factory.__name__ = f"tir_{base}"
    return MethodEntry(
        build=factory,
        paper=TIR_PAPER,
        description=f"Transformed-image reconstruction on top of '{base}' (its objective on "
        "z_inv, K decoders on z_equi).",
        test_options=METHODS.get(base).test_options if base in METHODS else {},
    )


# ``tir+<base>`` for every two-view objective, resolved on each lookup: an objective registered
# after this module (a plugin's) gets its variant too.
METHODS.derive("tir+", OBJECTIVES.names, tir_entry)
