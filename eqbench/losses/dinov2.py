"""The DINOv2 objective: DINO + iBOT cross-entropies on balanced teacher targets, + KoLeo.

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024, arXiv
2304.07193, section 4; code ``facebookresearch/dinov2`` (``dinov2/train/ssl_meta_arch.py``):

* image level: DINO's cross-entropy between the teacher's targets on the two global crops and the
  student's outputs on every other crop, averaged over the (teacher crop, student crop ≠ it)
  pairs (:func:`~eqbench.losses.dino.cross_entropy_pairs`);
* patch level: iBOT's cross-entropy between the teacher's targets for the tokens the student saw
  masked and the student's outputs there, averaged per image, then over the images of both crops
  (:func:`~eqbench.losses.dino.masked_token_cross_entropy`);
* teacher targets: Sinkhorn–Knopp (:func:`~eqbench.losses.sinkhorn.sinkhorn_knopp`, 3 iterations)
  over the ``2B`` image-level outputs and, separately, over the masked tokens; or, with
  ``centering="ema"``, DINO's softmax around an EMA centre (DINOv2's ``centering`` option; the
  patch centre averages the masked tokens only, as DINOv2 does);
* KoLeo (:class:`~eqbench.losses.koleo.KoLeoLoss`) on the student's global features, per global
  crop (DINOv2: not across two crops of the same image), summed over the two crops.

``L = cls_weight·L_DINO + patch_weight·L_iBOT + koleo_weight·Σ_crops L_KoLeo`` (DINOv2: 1, 1, 0.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.errors import EqbenchError
from eqbench.losses.dino import cross_entropy_pairs, masked_token_cross_entropy
from eqbench.losses.distributed import distributed_world
from eqbench.losses.koleo import KoLeoLoss
from eqbench.losses.sinkhorn import sinkhorn_knopp

#: How the teacher's outputs become targets.
CENTERINGS = ("sinkhorn_knopp", "ema")


@torch.no_grad()
def entropy(probs: Tensor) -> Tensor:
    """Mean entropy of the distributions in the rows of ``probs`` ``(M, K)`` (0 when empty)."""
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    return -(probs * probs.clamp(min=1e-12).log()).sum(dim=-1).mean()


@torch.no_grad()
def ema_center(center: Tensor, rows: Tensor, momentum: float) -> None:
    """``c ← m·c + (1 − m)·mean(rows)`` over the rows of every process; no-op without rows."""
    stats = torch.cat([rows.float().sum(dim=0), rows.new_tensor([rows.shape[0]]).float()])
    if distributed_world()[1] > 1:
        dist.all_reduce(stats)
    if stats[-1] > 0:
        center.mul_(momentum).add_(stats[:-1].unsqueeze(0) / stats[-1], alpha=1 - momentum)


class DINOv2Loss(nn.Module):
    """DINOv2's image-level, patch-level and KoLeo terms.

    Args:
        out_dim: ``K``, outputs of the image-level (DINO) head.
        patch_out_dim: ``K'``, outputs of the patch (iBOT) head.
        student_temp: ``τ_s`` (DINOv2: 0.1).
        centering: ``sinkhorn_knopp`` (DINOv2's recipe) or ``ema``.
        sinkhorn_iterations: Sinkhorn–Knopp iterations (DINOv2: 3).
        center_momentum: momentum of the EMA centres (``centering="ema"``; DINOv2: 0.9).
        cls_weight: weight of the DINO term (DINOv2: 1).
        patch_weight: weight of the iBOT term (DINOv2: 1).
        koleo_weight: weight of the KoLeo term (DINOv2: 0.1).

    Attributes:
        center: ``(1, K)`` EMA centre (``centering="ema"`` only; stays zero otherwise).
        patch_center: ``(1, K')`` EMA centre of the patch outputs.
    """

    center: Tensor
    patch_center: Tensor

    def __init__(
        self,
        out_dim: int,
        patch_out_dim: int,
        *,
        student_temp: float = 0.1,
        centering: str = "sinkhorn_knopp",
        sinkhorn_iterations: int = 3,
        center_momentum: float = 0.9,
        cls_weight: float = 1.0,
        patch_weight: float = 1.0,
        koleo_weight: float = 0.1,
    ) -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise EqbenchError(f"DINOv2 centering must be one of {CENTERINGS}, got '{centering}'.")
        if student_temp <= 0 or sinkhorn_iterations < 1:
            raise EqbenchError("DINOv2 needs student_temp > 0 and sinkhorn_iterations >= 1.")
        self.student_temp = student_temp
        self.centering = centering
        self.sinkhorn_iterations = sinkhorn_iterations
        self.center_momentum = center_momentum
        self.cls_weight = cls_weight
        self.patch_weight = patch_weight
        self.koleo_weight = koleo_weight
        self.koleo = KoLeoLoss()
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("patch_center", torch.zeros(1, patch_out_dim))

    @torch.no_grad()
    def teacher_targets(self, logits: Tensor, temperature: float, center: Tensor) -> Tensor:
        """Targets ``(M, K)`` of teacher logits ``(M, K)``; updates ``center`` in EMA mode."""
        logits = logits.float()
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(logits, temperature, self.sinkhorn_iterations)
        targets = F.softmax((logits - center) / temperature, dim=-1)
        ema_center(center, logits, self.center_momentum)
        return targets

    def forward(
        self,
        teacher_out: Sequence[Tensor],
        student_out: Sequence[Tensor],
        teacher_patch: Tensor,
        student_patch: Tensor,
        masks: Tensor,
        features: Sequence[Tensor],
        teacher_temp: float,
        patch_temp: float | None = None,
    ) -> dict[str, Tensor]:
        """The loss and its parts (fp32 scalars).

        Args:
            teacher_out: per global crop, ``(B, K)`` teacher logits.
            student_out: per crop, ``(B, K)`` student logits; the first ``len(teacher_out)``
                are the same global crops as the teacher's, in the same order.
            teacher_patch: ``(M, K')`` teacher logits of the tokens masked for the student, in
                the row-major order of ``masks`` (teacher on the unmasked crops).
            student_patch: ``(M, K')`` student logits of the same tokens (masked crops).
            masks: ``(T·B, N)`` bool, the student's masks of the global crops, crop after crop.
            features: per global crop, ``(B, D)`` the student's global features (KoLeo).
            teacher_temp: ``τ_t`` of the image-level targets.
            patch_temp: ``τ_t`` of the patch targets (default ``teacher_temp``, as DINOv2).

        Returns:
            ``loss`` (weighted sum), ``dino``, ``ibot_patch``, ``koleo`` (the sum over crops,
            before its weight) and ``teacher_entropy`` (mean entropy of the image targets).
        """
        if len(student_out) < 2 or not teacher_out or len(features) != len(teacher_out):
            raise EqbenchError(
                "DINOv2Loss needs teacher crops, one student feature batch per teacher crop and "
                "at least two student crops."
            )
        if teacher_patch.shape[0] != int(masks.sum()) or student_patch.shape != teacher_patch.shape:
            raise EqbenchError("DINOv2Loss: one teacher and student patch row per masked token.")
        n_crops = len(teacher_out)
        targets = self.teacher_targets(torch.cat(list(teacher_out)), teacher_temp, self.center)
        targets = targets.view(n_crops, -1, targets.shape[-1])  # (T, B, K)
        cls_loss = cross_entropy_pairs(targets, [s.float() for s in student_out], self.student_temp)
        temp = teacher_temp if patch_temp is None else patch_temp
        patch_targets = self.teacher_targets(teacher_patch, temp, self.patch_center)  # (M, K')
        patch_loss = masked_token_cross_entropy(
            patch_targets, student_patch.float(), masks, self.student_temp
        )
        koleo = sum((self.koleo(f) for f in features), cls_loss.new_zeros(()))
        loss = self.cls_weight * cls_loss + self.patch_weight * patch_loss
        return {
            "loss": loss + self.koleo_weight * koleo,
            "dino": cls_loss,
            "ibot_patch": patch_loss,
            "koleo": koleo,
            "teacher_entropy": entropy(targets.flatten(0, 1)),
        }
