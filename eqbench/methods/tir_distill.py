"""``tir+dino``, ``tir+ibot``, ``tir+dinov2``: TIR (Wang et al., AAAI-26, arXiv 2503.18753) on
self-distillation.

As :mod:`eqbench.methods.tir`, with DINO or iBOT (:mod:`eqbench.methods.dino`) or DINOv2
(:mod:`eqbench.methods.dinov2`) as the base:

* views: the two global crops are ``v1 = A1(I)`` and ``u = A2(I)``, and ``v2 = g_θ(u)`` replaces
  ``u``; the teacher sees ``v1`` and ``v2``, the student ``v1``, ``v2`` (masked for iBOT) and the
  local crops. Draws, in order: the global crops, the local crops, θ, then iBOT's masks;
* features: backbone patch tokens → TIR's linear head (student and EMA teacher alike) → ``z_inv``
  and ``z_equi``; the mean-pooled ``z_inv`` feeds DINO's head and CLS loss (and DINOv2's KoLeo),
  the per-token ``z_inv`` the patch head and loss of iBOT / DINOv2;
* reconstruction: ``z_equi`` of the student's ``v1`` and ``v2`` (the masked crops for iBOT and
  DINOv2, so no extra backbone pass) feeds ``K`` decoders predicting ``g_{kθ/(K+1)}(u)``;
* ``L = L_DINO/iBOT/DINOv2 + λ·L_recon``.

**eqbench defaults**: ``d_patch`` the backbone width, ``d_equi = d_patch/4`` (the paper: 2048 of
8192 for iBOT, 512 of 2048 for DINOv2); the transformation is rotation in [-45°, 45°] unless set
for ``tir+dino`` and ``tir+ibot`` (the configs set the paper's SE(2) for iBOT), and SE(2)
(rotation in [-45°, 45°], translation in [-10, 10] px at 224 px) for ``tir+dinov2``, the
paper's default for DINOv2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from eqbench.backbones import Encoder, Features
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.methods.base import Method, MethodFactory, TrainBatch, register_method
from eqbench.methods.dino import SMALL_HEADS, Crops, SelfDistillation, parse_distillation_options
from eqbench.methods.dinov2 import DINOv2, DINOv2Options, with_dinov2_defaults
from eqbench.methods.tir import (
    TIR_PAPER,
    TIRDecoder,
    TIROptions,
    build_tir_transform,
    recon_grad_share,
    reconstruction_losses,
    resolve_split,
    transform_and_targets,
)


@dataclass
class TIRCrops(Crops):
    """:class:`~eqbench.methods.dino.Crops` with ``globals = [v1, v2]`` and TIR's images.

    Attributes:
        u: ``A2(I)`` ``(B, 3, S, S)``.
        theta: ``(B, P)`` parameters of ``g``.
        targets: ``[g_{kθ/(K+1)}(u) for k = 1..K]``.
    """

    u: Tensor
    theta: Tensor
    targets: list[Tensor]


class TIRDistillation(SelfDistillation):
    """TIR around DINO (``ibot=False``) or iBOT; :class:`TIRDINOv2` around DINOv2.

    Args:
        base: ``dino``, ``ibot`` or ``dinov2``.
        encoder: the backbone.
        img_size: side of the global crops.
        options: :class:`~eqbench.methods.tir.TIROptions` fields mixed with the base's options.

    Attributes:
        base_schemas: option dataclasses of the base beyond DINO's, the local crops' and iBOT's;
            built from the options and passed to the base class after iBOT's.
    """

    base_schemas: ClassVar[tuple[type, ...]] = ()

    def __init__(self, base: str, encoder: Encoder, img_size: int, options: dict[str, Any]):
        name = f"tir+{base}"
        where = f"method '{name}' options"
        dino, local, ibot, (tir_part, *base_parts) = parse_distillation_options(
            name, options, base != "dino", extra=(TIROptions, *self.base_schemas)
        )
        tir = from_dict(TIROptions, tir_part, where)
        base_options: list[Any] = [
            from_dict(schema, part, where)
            for schema, part in zip(self.base_schemas, base_parts, strict=True)
        ]
        d_patch, d_equi = resolve_split(tir, base, encoder.embed_dim, where)
        super().__init__(
            name,
            encoder,
            img_size,
            dino,
            local,
            ibot,
            *base_options,
            token_head=nn.Linear(encoder.embed_dim, d_patch),
            head_in_dim=d_patch - d_equi,
        )
        self.d_patch, self.d_equi = d_patch, d_equi
        self.num_targets = tir.num_targets
        self.recon_weight = tir.recon_weight
        self.target_norm = tir.target_norm
        self.recon_reduction = tir.recon_reduction
        #: the student's backbone patch tokens of the current step (for ``recon_grad_share``)
        self._student_tokens: Tensor | None = None
        self.transform = build_tir_transform(tir, img_size, where)
        self.decoders = nn.ModuleList(
            TIRDecoder(2 * d_equi, encoder.patch_size, tir.decoder_channels)
            for _ in range(tir.num_targets)
        )
        self.has_unused_parameters = self.recon_weight == 0
        tir_options = {k: v for k, v in to_dict(tir).items() if k != "augment"}
        self.options = {
            **self.options,
            **tir_options,
            "d_patch": d_patch,
            "d_equi": d_equi,
            "transform_options": self.transform.config(),
        }

    @property
    def d_inv(self) -> int:
        """Width of the invariant part, ``d_patch − d_equi``."""
        return self.d_patch - self.d_equi

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(M, N, d_patch)`` → ``z_inv`` ``(M, N, d_inv)``, ``z_equi`` ``(M, N, d_equi)``."""
        z_inv, z_equi = z.split([self.d_inv, self.d_equi], dim=-1)
        return z_inv, z_equi

    @property
    def trained_feature(self) -> str | None:
        """``avgpool``: the image-level head sees the mean of the patch tokens' ``z_inv``."""
        return "avgpool"

    def head_inputs(
        self, modules: Mapping[str, nn.Module], features: Features
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Mean-pooled ``z_inv``, per-token ``z_inv`` and ``z_equi`` of the patch tokens."""
        if features.patch.requires_grad and self._student_tokens is None:
            self._student_tokens = features.patch  # the student's global crops (encoded first)
        z_inv, z_equi = self.split(modules["token_head"](features.patch))  # (M, N, ·)
        return z_inv.mean(dim=1), z_inv, z_equi

    def crops(self, batch: TrainBatch) -> TIRCrops:
        """``v1``, ``u`` and the local crops, then θ; ``globals = [v1, g_θ(u)]``."""
        v1, u = self.augment(batch.images, batch.generator)  # (B, 3, S, S) each
        local = self.augment.local_crops(batch.images, batch.generator)
        theta = self.transform.sample(u.shape[0], batch.generator).to(u.device)  # (B, P)
        v2, targets = transform_and_targets(self.transform, u, theta, self.num_targets)
        return TIRCrops(globals=[v1, v2], locals=local, u=u, theta=theta, targets=targets)

    def normalise_target(self, target: Tensor) -> Tensor:
        """A target image ``(B, 3, S, S)`` in [0, 1] in the space the decoders predict."""
        return self.encoder.normalize(target) if self.target_norm == "encoder" else target

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """``L_DINO/iBOT(z_inv) + λ·L_recon(z_equi(v1), z_equi(v2))``, with the parts.

        ``recon_grad_share`` (log steps) is measured on the student's global-crop tokens."""
        self._student_tokens = None
        crops = self.crops(batch)
        out, student = self.distill(crops, batch)
        out["ssl"] = out["loss"]
        if self.recon_weight == 0:
            return out
        assert student.equi is not None
        e1, e2 = student.equi.chunk(2)  # (B, N, d_equi) each
        recon = reconstruction_losses(
            self.decoders,
            e1,
            e2,
            student.grid,
            crops.targets,
            self.normalise_target,
            self.recon_reduction,
        )
        out.update(recon)
        weighted = self.recon_weight * recon["recon"]
        if batch.diagnostics and self._student_tokens is not None:
            out["recon_grad_share"] = recon_grad_share(out["ssl"], weighted, self._student_tokens)
        self._student_tokens = None
        out["loss"] = out["ssl"] + weighted
        return out


class TIRDINOv2(TIRDistillation, DINOv2):
    """TIR around DINOv2: TIR's views, split and decoders, DINOv2's step and loss on ``z_inv``."""

    base_schemas = (DINOv2Options,)


def tir_distillation_factory(base: str) -> MethodFactory:
    """The :data:`~eqbench.methods.base.METHODS` factory of ``tir+dino`` / ``tir+ibot`` /
    ``tir+dinov2``."""

    def factory(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
        if base == "dinov2":
            options = with_dinov2_defaults({"transform": "se2", **options})
            return TIRDINOv2(base, encoder, img_size, options)
        return TIRDistillation(base, encoder, img_size, options)

    factory.__name__ = f"tir_{base}"
    factory.__doc__ = f"TIR (arXiv 2503.18753) on top of '{base}'."
    return factory


for _base in ("dino", "ibot", "dinov2"):
    register_method(
        f"tir+{_base}",
        paper=TIR_PAPER,
        description=f"Transformed-image reconstruction on top of '{_base}' (its losses on z_inv).",
        test_options=SMALL_HEADS,
    )(tir_distillation_factory(_base))
