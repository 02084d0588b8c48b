"""``dinov2``: DINO + iBOT with separate heads, Sinkhorn–Knopp targets and KoLeo.

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024, arXiv
2304.07193, section 4; code ``facebookresearch/dinov2`` (``dinov2/train/ssl_meta_arch.py``,
``dinov2/loss/``). The single-machine version of its training step, built on
:mod:`eqbench.methods.dino`:

* views: two global crops and ``n_local`` local crops (:class:`~eqbench.methods.MultiCropAugment`);
  the teacher sees the global crops, the student every crop, its global crops masked as in iBOT
  (each with probability ``mask_prob`` 0.5, a fraction in ``mask_ratio ± mask_ratio_var`` =
  [0.1, 0.5] of its tokens, replaced by a learnable mask token);
* heads: the global feature (CLS token) → the DINO head (:class:`~eqbench.methods.heads.DINOHead`);
  the patch tokens the student saw masked → a separate iBOT head with its own MLP and last layer
  (DINOv2's ``ibot.separate_head``; ``shared_head: true`` uses the DINO head for both); the
  teacher is an EMA copy of backbone and both heads;
* loss: :class:`~eqbench.losses.DINOv2Loss`: DINO's cross-entropy over the (teacher global crop,
  other student crop) pairs and iBOT's over the masked tokens, both on teacher targets from
  Sinkhorn–Knopp (3 iterations, temperature ``teacher_temp``, 0.04 → 0.07 in DINOv2) instead of
  DINO's EMA centre, plus ``koleo_weight`` (0.1) × KoLeo on the student's CLS features of each
  global crop. ``L = cls_weight·L_DINO + patch_weight·L_iBOT + 0.1·L_KoLeo``.

Options: DINO's (:class:`~eqbench.methods.dino.DINOOptions`), the local crops', iBOT's
(:class:`~eqbench.methods.dino.IBOTOptions`) and :class:`DINOv2Options`. Defaults that differ
from ``ibot``'s (:data:`DINOV2_DEFAULTS`): ``shared_head: false``, ``norm_last_layer: false``
(DINOv2 learns the last layer's norms), ``teacher_temp`` 0.07; the patch temperatures follow
``teacher_temp`` / ``warmup_teacher_temp`` unless set (DINOv2 uses one temperature for both).

**eqbench deviations** (the ImageNet configs set the paper's values where there is an option):
head sizes are CPU-sized by default (DINOv2: 65536 prototypes, MLP 2048, bottleneck 256; the
separate iBOT head takes the DINO head's ``hidden_dim`` / ``bottleneck_dim``, equal in DINOv2);
masks are drawn at random per image (:mod:`eqbench.methods.masking`) rather than DINOv2's
block-wise masks with exactly half the images masked; not implemented: freezing the last layer
during the first epoch, layer-wise lr decay (0.9) and the patch-embedding lr multiplier (0.2),
FSDP, xFormers' fused kernels, and the high-resolution adaptation phase. The checkpoint's
backbone is the student's; the EMA teacher's is written beside it (``teacher.pt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.losses import DINOv2Loss
from eqbench.losses.dinov2 import CENTERINGS
from eqbench.methods.augment import LocalCropConfig
from eqbench.methods.base import Method, TrainBatch, register_method
from eqbench.methods.dino import (
    SMALL_HEADS,
    BranchOutput,
    Crops,
    DINOOptions,
    IBOTOptions,
    SelfDistillation,
    parse_distillation_options,
    warmup_value,
)
from eqbench.methods.heads import DINOHead

#: Where ``dinov2``'s defaults differ from those of ``ibot``'s options.
DINOV2_DEFAULTS: dict[str, Any] = {
    "shared_head": False,
    "norm_last_layer": False,
    "teacher_temp": 0.07,
}


@dataclass
class DINOv2Options:
    """Options DINOv2 adds to DINO's and iBOT's.

    Attributes:
        koleo_weight: weight of the KoLeo term (paper: 0.1; 0 turns it off).
        centering: ``sinkhorn_knopp`` (DINOv2's recipe) or ``ema`` (DINO's centre and softmax).
        sinkhorn_iterations: Sinkhorn–Knopp iterations (paper: 3).
    """

    koleo_weight: float = 0.1
    centering: str = "sinkhorn_knopp"
    sinkhorn_iterations: int = 3

    def __post_init__(self) -> None:
        if self.koleo_weight < 0:
            raise ConfigError(f"DINOv2 koleo_weight must be >= 0, got {self.koleo_weight}.")
        if self.centering not in CENTERINGS:
            raise ConfigError(
                f"DINOv2 centering must be one of {', '.join(CENTERINGS)}, got '{self.centering}'."
            )
        if self.sinkhorn_iterations < 1:
            raise ConfigError("DINOv2 sinkhorn_iterations must be >= 1.")


def with_dinov2_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` over :data:`DINOV2_DEFAULTS`; the patch temperatures follow the CLS ones."""
    merged = {**DINOV2_DEFAULTS, **options}
    merged.setdefault("teacher_patch_temp", merged["teacher_temp"])
    merged.setdefault("warmup_teacher_patch_temp", merged.get("warmup_teacher_temp", 0.04))
    return merged


class DINOv2(SelfDistillation):
    """DINOv2's training step; the base of ``tir+dinov2``.

    Args:
        name: registry name.
        encoder: the student backbone.
        img_size: side of the global crops.
        options: DINO's options.
        local: the local crops' options.
        ibot: iBOT's options (masking, patch head, loss weights).
        dinov2: :class:`DINOv2Options`.
        token_head: optional per-token module between the backbone and the heads (TIR).
        head_in_dim: width of what the heads take (default the backbone width).
    """

    def __init__(
        self,
        name: str,
        encoder: Encoder,
        img_size: int,
        options: DINOOptions,
        local: LocalCropConfig,
        ibot: IBOTOptions | None,
        dinov2: DINOv2Options | None = None,
        *,
        token_head: nn.Module | None = None,
        head_in_dim: int | None = None,
    ) -> None:
        if ibot is None or dinov2 is None:
            raise ConfigError(f"method '{name}' needs iBOT's and DINOv2's options.")
        if ibot.shared_head and ibot.patch_out_dim not in (None, options.out_dim):
            raise ConfigError(
                f"method '{name}': a shared head has one output width; drop patch_out_dim or "
                "set shared_head: false."
            )
        # DINO's head, teacher and multi-crop; the iBOT parts are added below, DINOv2's way.
        super().__init__(
            name, encoder, img_size, options, local, None,
            token_head=token_head, head_in_dim=head_in_dim,
        )  # fmt: skip
        del self.dino_loss  # DINOv2Loss holds the centring
        self.ibot, self.dinov2 = ibot, dinov2
        patch_out = ibot.patch_out_dim or options.out_dim
        if not ibot.shared_head:
            self.ibot_head = DINOHead(
                head_in_dim or encoder.embed_dim,
                patch_out,
                options.hidden_dim,
                options.bottleneck_dim,
                options.norm_last_layer,
            )
            self.teacher.mirror("ibot_head", self.ibot_head)
        self.mask_token = nn.Parameter(torch.zeros(encoder.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.loss = DINOv2Loss(
            options.out_dim,
            patch_out,
            student_temp=options.student_temp,
            centering=dinov2.centering,
            sinkhorn_iterations=dinov2.sinkhorn_iterations,
            center_momentum=options.center_momentum,
            cls_weight=ibot.cls_weight,
            patch_weight=ibot.patch_weight,
            koleo_weight=dinov2.koleo_weight,
        )
        self.options = {**self.options, **to_dict(ibot), **to_dict(dinov2)}

    @staticmethod
    def patch_head(modules: dict[str, nn.Module]) -> nn.Module:
        """The iBOT head of the student's or the teacher's ``modules`` (the DINO head if shared)."""
        return modules["ibot_head"] if "ibot_head" in modules else modules["head"]

    def distill(self, crops: Crops, batch: TrainBatch) -> tuple[dict[str, Tensor], BranchOutput]:
        """DINOv2's losses of ``crops``; also returns the student's global branch."""
        assert self.ibot is not None
        opts, step = self.opts, batch.step
        n = crops.globals[0].shape[0]
        global_batch = torch.cat(crops.globals)  # (2B, 3, S, S)
        mask = self.masks(2 * n, batch.generator, global_batch.device)  # (2B, N)
        teacher = dict(self.teacher.items())
        with torch.no_grad():
            t = self.encode(teacher, global_batch)
            t_logits = teacher["head"](t.pooled)  # (2B, K)
            t_patch = self.patch_head(teacher)(t.tokens[mask])  # (M, K'), masked tokens only
        student = self.student_modules()
        s = self.encode(student, global_batch, mask)
        s_logits = self.head(s.pooled)  # (2B, K)
        s_patch = self.patch_head(student)(s.tokens[mask])  # (M, K')
        student_logits = list(s_logits.chunk(2))
        if crops.locals:  # one pass for all local crops (same size)
            local = self.encode(student, torch.cat(crops.locals))
            student_logits += list(self.head(local.pooled).chunk(len(crops.locals)))
        teacher_temp = warmup_value(
            opts.warmup_teacher_temp, opts.teacher_temp, step, opts.warmup_teacher_temp_steps
        )
        patch_temp = warmup_value(
            self.ibot.warmup_teacher_patch_temp,
            self.ibot.teacher_patch_temp,
            step,
            opts.warmup_teacher_temp_steps,
        )
        with torch.autocast(global_batch.device.type, enabled=False):  # targets, KoLeo in fp32
            out = self.loss(
                list(t_logits.chunk(2)),
                student_logits,
                t_patch,
                s_patch,
                mask,
                list(s.pooled.chunk(2)),
                teacher_temp,
                patch_temp,
            )
        out["dino_kl"] = out["dino"].detach() - out["teacher_entropy"]
        out["teacher_temp"] = out["loss"].new_tensor(teacher_temp)
        return out, BranchOutput(s_logits, None, s.equi, s.grid)


def parse_dinov2_options(
    name: str, options: dict[str, Any], extra: tuple[type, ...] = ()
) -> tuple[DINOOptions, LocalCropConfig, IBOTOptions, DINOv2Options, list[dict[str, Any]]]:
    """Split ``options`` (over :data:`DINOV2_DEFAULTS`) into DINO's, the local crops', iBOT's,
    DINOv2's and those of ``extra`` schemas.

    Raises:
        ConfigError: an option no schema knows (did-you-mean), or a bad value.
    """
    dino, local, ibot, parts = parse_distillation_options(
        name, with_dinov2_defaults(options), True, extra=(DINOv2Options, *extra)
    )
    assert ibot is not None
    dinov2 = from_dict(DINOv2Options, parts[0], f"method '{name}' options")
    return dino, local, ibot, dinov2, parts[1:]


@register_method(
    "dinov2",
    paper="DINOv2: Oquab et al., TMLR 2024, arXiv 2304.07193",
    description="DINO + iBOT with separate heads, Sinkhorn-Knopp targets and KoLeo.",
    test_options=SMALL_HEADS,
)
def dinov2_factory(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """DINOv2 (arXiv 2304.07193)."""
    dino, local, ibot, dinov2, _ = parse_dinov2_options("dinov2", options)
    return DINOv2("dinov2", encoder, img_size, dino, local, ibot, dinov2)
