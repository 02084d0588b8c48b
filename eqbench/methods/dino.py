"""``dino`` and ``ibot``: self-distillation with an EMA teacher and multi-crop.

DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
arXiv 2104.14294; code ``facebookresearch/dino``, ``main_dino.py``):

* views: two global crops and ``n_local`` local crops (:class:`MultiCropAugment`); the teacher
  sees the global crops, the student every crop;
* student: backbone global feature (CLS token, option ``pool``) → :class:`DINOHead`; teacher: an
  EMA copy of backbone and head (:class:`EMATeacher`), updated by the engine after each step;
* loss: :class:`~eqbench.losses.DINOLoss`, cross-entropy between the centred, sharpened teacher
  softmax (temperature ``teacher_temp``, linear warm-up from ``warmup_teacher_temp`` over
  ``warmup_teacher_temp_steps``) and the student log-softmax (``student_temp`` 0.1) over every
  (teacher global crop, other student crop) pair.

iBOT (Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022,
arXiv 2111.07832; code ``bytedance/ibot``, ``main_ibot.py``) adds masked image modelling: the
student's global crops have some patch embeddings replaced by a learnable mask token
(:mod:`eqbench.methods.masking`, :meth:`~eqbench.backbones.Encoder.forward_masked`); the same head
MLP maps the patch tokens to ``K'`` outputs (last layer shared or not); the loss adds
:class:`~eqbench.losses.IBOTPatchLoss` between the teacher's patch outputs on the unmasked crop
and the student's on the masked same crop, with its own centre and temperature
(``teacher_patch_temp``). ``L = cls_weight·L_[CLS] + patch_weight·L_MIM`` (paper: 1 and 1).

**eqbench defaults** (CPU-sized; the ImageNet configs set the papers' values): head
``hidden_dim`` 1024 (paper 2048), ``out_dim`` 4096 (DINO 65536, iBOT 8192), two local crops
(paper 8 / 10), random rather than block-wise masking. Not implemented: freezing the last layer
during the first epoch (``freeze_last_layer``). The checkpoint's backbone is the student's; the
teacher's weights are in the training state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from eqbench.backbones import Encoder, Features
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.losses import DINOLoss, IBOTPatchLoss
from eqbench.methods.augment import (
    DINO_AUGMENT,
    LocalCropConfig,
    MultiCropAugment,
    build_augment_config,
)
from eqbench.methods.base import (
    Method,
    MethodFactory,
    TrainBatch,
    register_method,
    split_options,
)
from eqbench.methods.heads import DINOHead
from eqbench.methods.masking import random_patch_masks
from eqbench.methods.teacher import EMATeacher


@dataclass
class DINOOptions:
    """Options of DINO (and of iBOT's CLS part); the local crops have their own.

    Attributes:
        out_dim: ``K``, outputs of the head (DINO: 65536; eqbench default 4096).
        hidden_dim: head MLP width (paper: 2048; eqbench default 1024).
        bottleneck_dim: head bottleneck (paper: 256).
        norm_last_layer: freeze the last layer's norm (DINO: true).
        student_temp: ``τ_s`` (paper: 0.1).
        teacher_temp: ``τ_t`` after the warm-up (DINO default 0.04; 0.07 for longer runs).
        warmup_teacher_temp: ``τ_t`` at step 0 (paper: 0.04).
        warmup_teacher_temp_steps: steps of the linear ``τ_t`` warm-up (paper: 30 epochs).
        center_momentum: momentum of the centre EMA (paper: 0.9).
        pool: student/teacher global feature: ``cls`` (DINO) or ``avgpool``.
        augment: overrides of the global crops' :class:`~eqbench.methods.AugmentConfig`.
    """

    out_dim: int = 4096
    hidden_dim: int = 1024
    bottleneck_dim: int = 256
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_steps: int = 0
    center_momentum: float = 0.9
    pool: str = "cls"
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.student_temp, self.teacher_temp, self.warmup_teacher_temp) <= 0:
            raise ConfigError("DINO temperatures must be > 0.")
        if self.warmup_teacher_temp_steps < 0:
            raise ConfigError("DINO warmup_teacher_temp_steps must be >= 0.")
        if not 0 <= self.center_momentum <= 1:
            raise ConfigError("DINO center_momentum must lie in [0, 1].")
        if self.pool not in ("cls", "avgpool"):
            raise ConfigError(f"DINO pool must be cls or avgpool, got '{self.pool}'.")


@dataclass
class IBOTOptions:
    """Options iBOT adds to DINO's.

    Attributes:
        patch_out_dim: outputs of the patch last layer when not shared (default ``out_dim``).
        shared_head: one last layer for CLS and patch outputs (iBOT ViT-S/B/L: true).
        mask_ratio: mean masked fraction of a masked crop (paper: 0.3).
        mask_ratio_var: half-width of its uniform range (paper: 0.2).
        mask_prob: probability that a global crop is masked at all (paper: 0.5).
        teacher_patch_temp: teacher temperature of the patch loss (paper: 0.07).
        warmup_teacher_patch_temp: its value at step 0 (paper: 0.04), warmed up over
            ``warmup_teacher_temp_steps``.
        cls_weight: ``λ1``, weight of the CLS loss (paper: 1).
        patch_weight: ``λ2``, weight of the masked-patch loss (paper: 1).
    """

    patch_out_dim: int | None = None
    shared_head: bool = True
    mask_ratio: float = 0.3
    mask_ratio_var: float = 0.2
    mask_prob: float = 0.5
    teacher_patch_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    cls_weight: float = 1.0
    patch_weight: float = 1.0

    def __post_init__(self) -> None:
        low, high = self.mask_ratio - self.mask_ratio_var, self.mask_ratio + self.mask_ratio_var
        if not (0 <= low <= high <= 1 and 0 <= self.mask_prob <= 1):
            raise ConfigError("iBOT mask_ratio ± mask_ratio_var and mask_prob must lie in [0, 1].")
        if min(self.teacher_patch_temp, self.warmup_teacher_patch_temp) <= 0:
            raise ConfigError("iBOT temperatures must be > 0.")
        if min(self.cls_weight, self.patch_weight) < 0:
            raise ConfigError("iBOT loss weights must be >= 0.")


def warmup_value(start: float, end: float, step: int, warmup_steps: int) -> float:
    """``linspace(start, end, warmup_steps)[step]`` during the warm-up, then ``end`` (DINO)."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / max(1, warmup_steps - 1)


@torch.no_grad()
def teacher_entropy(logits: Tensor, center: Tensor, temperature: float) -> Tensor:
    """Mean entropy of the teacher's centred, sharpened distribution ``(M, K)`` (fp32)."""
    log_p = torch.log_softmax((logits.float() - center) / temperature, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1).mean()


@dataclass
class Crops:
    """The views of one step, each ``(B, 3, s, s)`` in [0, 1].

    Attributes:
        globals: the two global crops (teacher and student).
        locals: the local crops (student only).
    """

    globals: list[Tensor]
    locals: list[Tensor]


@dataclass
class Encoded:
    """What the heads take from a backbone pass.

    Attributes:
        pooled: ``(M, D')`` global feature (the image-level head's input).
        tokens: ``(M, N, D')`` patch tokens (the patch head's input).
        equi: ``(M, N, d_equi)`` equivariant tokens (TIR), else ``None``.
        grid: the patch grid ``(h, w)``.
    """

    pooled: Tensor
    tokens: Tensor
    equi: Tensor | None
    grid: tuple[int, int]


@dataclass
class BranchOutput:
    """What the student or the teacher computes on a batch of crops.

    Attributes:
        logits: ``(M, K)`` head outputs of the global feature.
        patch_logits: ``(M, N, K')`` head outputs of the patch tokens (iBOT), else ``None``.
        equi: ``(M, N, d_equi)`` equivariant tokens (TIR), else ``None``.
        grid: the patch grid ``(h, w)``.
    """

    logits: Tensor
    patch_logits: Tensor | None
    equi: Tensor | None
    grid: tuple[int, int]


class SelfDistillation(Method):
    """DINO, or iBOT when ``ibot`` options are given; the base of ``tir+dino``/``tir+ibot``.

    Args:
        name: registry name.
        encoder: the student backbone.
        img_size: side of the global crops.
        options: DINO's options.
        local: the local crops' options.
        ibot: iBOT's options, or ``None`` for DINO.
        token_head: optional per-token module between the backbone and the head (TIR's linear
            head); it is copied into the teacher too.
        head_in_dim: width of what the head takes (default the backbone width).
    """

    has_teacher = True

    def __init__(
        self,
        name: str,
        encoder: Encoder,
        img_size: int,
        options: DINOOptions,
        local: LocalCropConfig,
        ibot: IBOTOptions | None = None,
        *,
        token_head: nn.Module | None = None,
        head_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.encoder = encoder
        self.opts, self.ibot = options, ibot
        augment_config = build_augment_config(options.augment, DINO_AUGMENT)
        self.augment = MultiCropAugment(augment_config, local, img_size, encoder.patch_size)
        self.n_tokens = (img_size // encoder.patch_size) ** 2
        separate = ibot is not None and not ibot.shared_head
        patch_out = (ibot.patch_out_dim or options.out_dim) if ibot is not None else None
        self.head = DINOHead(
            head_in_dim or encoder.embed_dim,
            options.out_dim,
            options.hidden_dim,
            options.bottleneck_dim,
            options.norm_last_layer,
            patch_out_dim=patch_out if separate else None,
        )
        students: dict[str, nn.Module] = {"encoder": encoder, "head": self.head}
        if token_head is not None:
            self.token_head = token_head
            students["token_head"] = token_head
        self.teacher = EMATeacher(students)
        self.dino_loss = DINOLoss(options.out_dim, options.student_temp, options.center_momentum)
        self.mask_token: nn.Parameter | None = None
        self.patch_loss: IBOTPatchLoss | None = None
        if ibot is not None:
            self.mask_token = nn.Parameter(torch.zeros(encoder.embed_dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            self.patch_loss = IBOTPatchLoss(
                patch_out or options.out_dim, options.student_temp, options.center_momentum
            )
        self.options = {
            **to_dict(options),
            **(to_dict(ibot) if ibot is not None else {}),
            "augment": self.augment.describe(),
        }

    # ------------------------------------------------------------------ teacher
    def student_modules(self) -> dict[str, nn.Module]:
        """The student's modules that the teacher mirrors, by the teacher's names."""
        return {name: getattr(self, name) for name in self.teacher}

    def update_teacher(self, momentum: float) -> None:
        """EMA step of the teacher towards the student (called by the engine)."""
        self.teacher.ema_update(self.student_modules(), momentum)

    # ------------------------------------------------------------------ a step
    def crops(self, batch: TrainBatch) -> Crops:
        """The two global crops, then the local crops, drawn in that order from the generator."""
        v1, v2 = self.augment(batch.images, batch.generator)
        return Crops(
            globals=[v1, v2], locals=self.augment.local_crops(batch.images, batch.generator)
        )

    def masks(self, n_images: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """iBOT's ``(n_images, N)`` patch masks, drawn from ``generator``."""
        assert self.ibot is not None
        return random_patch_masks(
            n_images,
            self.n_tokens,
            generator,
            ratio=self.ibot.mask_ratio,
            ratio_var=self.ibot.mask_ratio_var,
            prob=self.ibot.mask_prob,
        ).to(device)

    def head_inputs(
        self, modules: Mapping[str, nn.Module], features: Features
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(global feature (M, D'), patch tokens (M, N, D'), equivariant tokens or None)``."""
        return features.pooled(self.opts.pool), features.patch, None

    def encode(
        self, modules: Mapping[str, nn.Module], images: Tensor, mask: Tensor | None = None
    ) -> Encoded:
        """Backbone (masked when ``mask`` is given) → the inputs of the heads."""
        encoder = modules["encoder"]
        assert isinstance(encoder, Encoder)
        if mask is not None:
            assert self.mask_token is not None
            features = encoder.forward_masked(images, mask, self.mask_token)
        else:
            features = encoder(images)
        pooled, tokens, equi = self.head_inputs(modules, features)
        return Encoded(pooled, tokens, equi, features.grid)

    def branch(
        self,
        modules: Mapping[str, nn.Module],
        images: Tensor,
        *,
        mask: Tensor | None = None,
        patches: bool = False,
    ) -> BranchOutput:
        """Backbone (masked when ``mask`` is given) → head, for the student or the teacher."""
        encoded = self.encode(modules, images, mask)
        head = modules["head"]
        assert isinstance(head, DINOHead)
        patch_logits = head.forward_patch(encoded.tokens) if patches else None  # (M, N, K')
        return BranchOutput(head(encoded.pooled), patch_logits, encoded.equi, encoded.grid)

    def distill(self, crops: Crops, batch: TrainBatch) -> tuple[dict[str, Tensor], BranchOutput]:
        """DINO's (and iBOT's) losses of ``crops``; also returns the student's global branch."""
        opts, step = self.opts, batch.step
        with_patches = self.ibot is not None
        n = crops.globals[0].shape[0]
        global_batch = torch.cat(crops.globals)  # (2B, 3, S, S)
        with torch.no_grad():
            teacher = self.branch(dict(self.teacher.items()), global_batch, patches=with_patches)
        mask = None
        if self.ibot is not None:
            mask = self.masks(2 * n, batch.generator, global_batch.device)  # (2B, N)
        student = self.branch(self.student_modules(), global_batch, mask=mask, patches=with_patches)
        student_logits = list(student.logits.chunk(2))
        if crops.locals:  # one pass for all local crops (same size)
            local = self.branch(self.student_modules(), torch.cat(crops.locals))
            student_logits += list(local.logits.chunk(len(crops.locals)))
        teacher_temp = warmup_value(
            opts.warmup_teacher_temp, opts.teacher_temp, step, opts.warmup_teacher_temp_steps
        )
        with torch.autocast(global_batch.device.type, enabled=False):  # softmax / τ in fp32
            entropy = teacher_entropy(teacher.logits, self.dino_loss.center, teacher_temp)
            cls_loss = self.dino_loss(list(teacher.logits.chunk(2)), student_logits, teacher_temp)
        out = {
            "loss": cls_loss,
            "dino": cls_loss,
            # DINO's collapse diagnostics (paper, section 5.3): CE = H(P_t) + KL(P_t ‖ P_s)
            "teacher_entropy": entropy,
            "dino_kl": cls_loss.detach() - entropy,
            "teacher_temp": cls_loss.new_tensor(teacher_temp),
        }
        if self.ibot is not None:
            assert self.patch_loss is not None and mask is not None
            assert teacher.patch_logits is not None and student.patch_logits is not None
            patch_temp = warmup_value(
                self.ibot.warmup_teacher_patch_temp,
                self.ibot.teacher_patch_temp,
                step,
                opts.warmup_teacher_temp_steps,
            )
            with torch.autocast(global_batch.device.type, enabled=False):
                patch_loss = self.patch_loss(
                    list(teacher.patch_logits.chunk(2)),
                    list(student.patch_logits.chunk(2)),
                    list(mask.chunk(2)),
                    patch_temp,
                )
            out["ibot_patch"] = patch_loss
            out["loss"] = self.ibot.cls_weight * cls_loss + self.ibot.patch_weight * patch_loss
        return out, student

    @property
    def trained_feature(self) -> str | None:
        """The student global feature the image-level head sees (option ``pool``)."""
        return str(self.opts.pool)

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """Crops → teacher on the global crops, student on all → DINO (+ iBOT) loss."""
        return self.distill(self.crops(batch), batch)[0]


def parse_distillation_options(
    name: str, options: dict[str, Any], ibot: bool, extra: tuple[type, ...] = ()
) -> tuple[DINOOptions, LocalCropConfig, IBOTOptions | None, list[dict[str, Any]]]:
    """Split ``options`` into DINO's, the local crops', iBOT's and those of ``extra`` schemas.

    Raises:
        ConfigError: an option no schema knows (did-you-mean), or a bad value.
    """
    where = f"method '{name}' options"
    schemas: list[type] = [DINOOptions, LocalCropConfig, *([IBOTOptions] if ibot else []), *extra]
    parts = split_options(options, schemas, where)
    dino = from_dict(DINOOptions, parts[0], where)
    local = from_dict(LocalCropConfig, parts[1], where)
    ibot_opts = from_dict(IBOTOptions, parts[2], where) if ibot else None
    return dino, local, ibot_opts, parts[3 if ibot else 2 :]


def distillation_factory(name: str, ibot: bool) -> MethodFactory:
    """The :data:`~eqbench.methods.base.METHODS` factory of ``dino`` or ``ibot``."""

    def factory(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
        dino, local, ibot_opts, _ = parse_distillation_options(name, options, ibot)
        return SelfDistillation(name, encoder, img_size, dino, local, ibot_opts)

    factory.__name__ = name
    factory.__doc__ = f"{'iBOT (arXiv 2111.07832)' if ibot else 'DINO (arXiv 2104.14294)'}."
    return factory


#: Heads small enough for the tests (:attr:`~eqbench.methods.base.MethodEntry.test_options`).
SMALL_HEADS = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}

register_method(
    "dino",
    paper="DINO: Caron et al., ICCV 2021, arXiv 2104.14294",
    description="Self-distillation of the CLS token with an EMA teacher and multi-crop.",
    test_options=SMALL_HEADS,
)(distillation_factory("dino", ibot=False))
register_method(
    "ibot",
    paper="iBOT: Zhou et al., ICLR 2022, arXiv 2111.07832",
    description="DINO plus masked-patch self-distillation on the patch tokens.",
    test_options=SMALL_HEADS,
)(distillation_factory("ibot", ibot=True))
