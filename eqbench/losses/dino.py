"""Self-distillation losses of DINO and iBOT, with their EMA centres.

DINO (Caron et al., ICCV 2021, arXiv 2104.14294, eq. 1 and ``DINOLoss`` in ``main_dino.py``):
the teacher's outputs on the global crops are centred and sharpened,
``P_t = softmax((g_t − c) / τ_t)``, the student's on every crop give
``log P_s = log_softmax(g_s / τ_s)``, and the loss is the cross-entropy ``−Σ P_t log P_s``
averaged over the batch and over every (teacher crop ``q``, student crop ``v ≠ q``) pair. The
centre ``c`` follows the batch mean of the teacher outputs by EMA (momentum 0.9), computed over all
processes.

iBOT (Zhou et al., ICLR 2022, arXiv 2111.07832, eq. 2 and ``iBOTLoss`` in ``main_ibot.py``): the
same cross-entropy per patch token, between the teacher's patch outputs on an unmasked global crop
and the student's on the masked same crop, averaged over the masked tokens of each image, then over
the images (an image without masked tokens counts as 0) and over the global crops. Its centre is
the EMA of the teacher's patch outputs averaged over all tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.errors import EqbenchError
from eqbench.losses.distributed import distributed_world


def _check_temperatures(teacher_temp: float, student_temp: float) -> None:
    if teacher_temp <= 0 or student_temp <= 0:
        raise EqbenchError(
            f"Temperatures must be > 0, got teacher {teacher_temp}, student {student_temp}."
        )


def _mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of ``x`` over processes (unchanged with one process)."""
    _, world = distributed_world()
    if world == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world


class DINOLoss(nn.Module):
    """DINO's cross-entropy between centred, sharpened teacher and student distributions.

    Args:
        out_dim: ``K``, width of the head outputs.
        student_temp: ``τ_s`` (paper: 0.1).
        center_momentum: ``m`` of the centre EMA ``c ← m·c + (1 − m)·mean(g_t)`` (paper: 0.9).

    Attributes:
        center: ``(1, K)`` buffer (saved with the method's state).
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        _check_temperatures(1.0, student_temp)
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, teacher_out: Sequence[Tensor], student_out: Sequence[Tensor], teacher_temp: float
    ) -> Tensor:
        """The loss, then the centre update (the loss uses the centre from before it).

        Args:
            teacher_out: one ``(B, K)`` logit tensor per global crop (teacher).
            student_out: one ``(B, K)`` per crop (student); the first ``len(teacher_out)`` are
                the same global crops as the teacher's, in the same order.
            teacher_temp: ``τ_t`` of this step.

        Returns:
            The mean cross-entropy over the batch and the ``q ≠ v`` pairs (a scalar, fp32).
        """
        _check_temperatures(teacher_temp, self.student_temp)
        if len(student_out) < 2 or not teacher_out:
            raise EqbenchError("DINOLoss needs at least one teacher and two student crops.")
        teacher = torch.stack([t.float() for t in teacher_out])  # (T, B, K)
        loss = dino_cross_entropy(
            teacher,
            [s.float() for s in student_out],
            self.center,
            teacher_temp,
            self.student_temp,
        )
        self.update_center(teacher.flatten(0, 1))
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """``c ← m·c + (1 − m)·mean(teacher_out)`` with the mean over rows and processes.

        Args:
            teacher_out: ``(M, K)`` teacher logits.
        """
        batch_center = _mean_over_ranks(teacher_out.float().mean(dim=0, keepdim=True))  # (1, K)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def dino_cross_entropy(
    teacher: Tensor,
    student_out: Sequence[Tensor],
    center: Tensor,
    teacher_temp: float,
    student_temp: float,
) -> Tensor:
    """``mean_{q ≠ v} mean_b −Σ_k softmax((t_q − c)/τ_t) · log_softmax(s_v/τ_s)``.

    Args:
        teacher: ``(T, B, K)`` teacher logits of the ``T`` global crops.
        student_out: ``V`` tensors ``(B, K)``; index ``v < T`` is the same crop as teacher ``v``.
        center: ``(1, K)``.
        teacher_temp: ``τ_t``.
        student_temp: ``τ_s``.
    """
    targets = F.softmax((teacher - center) / teacher_temp, dim=-1)  # (T, B, K)
    return cross_entropy_pairs(targets, student_out, student_temp)


def cross_entropy_pairs(
    targets: Tensor, student_out: Sequence[Tensor], student_temp: float
) -> Tensor:
    """``mean_{q ≠ v} mean_b −Σ_k P_q · log_softmax(s_v/τ_s)`` for given teacher targets.

    Args:
        targets: ``(T, B, K)`` teacher distributions of the ``T`` global crops (no gradient).
        student_out: ``V`` tensors ``(B, K)``; index ``v < T`` is the same crop as target ``v``.
        student_temp: ``τ_s``.
    """
    targets = targets.detach()
    total = targets.new_zeros(())
    terms = 0
    for v, student in enumerate(student_out):
        log_p = F.log_softmax(student / student_temp, dim=-1)  # (B, K)
        for q in range(targets.shape[0]):
            if q == v:
                continue
            total = total + torch.sum(-targets[q] * log_p, dim=-1).mean()
            terms += 1
    return total / terms


def masked_token_cross_entropy(
    targets: Tensor, student: Tensor, masks: Tensor, student_temp: float
) -> Tensor:
    """iBOT's patch cross-entropy on the masked tokens only (DINOv2's ``forward_masked``).

    Args:
        targets: ``(M, K)`` teacher distributions of the masked tokens, in the row-major order of
            ``masks`` (``tokens[masks]``).
        student: ``(M, K)`` student logits of the same tokens (masked crop).
        masks: ``(n, N)`` bool, ``M`` of them ``True``.
        student_temp: ``τ_s``.

    Returns:
        ``mean_images (Σ_masked CE / max(1, #masked))``: an image without masked tokens counts
        as 0, as in :class:`IBOTPatchLoss`.
    """
    per_token = torch.sum(-targets.detach() * F.log_softmax(student / student_temp, dim=-1), -1)
    counts = masks.sum(dim=1, keepdim=True).clamp(min=1).expand_as(masks)[masks]  # (M,)
    return (per_token / counts).sum() / masks.shape[0]


class IBOTPatchLoss(nn.Module):
    """iBOT's masked-patch cross-entropy, with its own centre.

    Args:
        out_dim: ``K``, width of the patch head outputs.
        student_temp: ``τ_s`` (paper: 0.1).
        center_momentum: momentum of the patch centre EMA (paper: 0.9).

    Attributes:
        center: ``(1, K)`` buffer.
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        _check_temperatures(1.0, student_temp)
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        teacher_out: Sequence[Tensor],
        student_out: Sequence[Tensor],
        masks: Sequence[Tensor],
        teacher_temp: float,
    ) -> Tensor:
        """The loss over the global crops, then the centre update.

        Args:
            teacher_out: per global crop, ``(B, N, K)`` teacher patch logits (unmasked crop).
            student_out: per global crop, ``(B, N, K)`` student patch logits (masked crop).
            masks: per global crop, ``(B, N)`` bool, ``True`` where the student's token was
                masked.
            teacher_temp: ``τ_t`` of this step (iBOT's ``teacher_patch_temp``).

        Returns:
            ``mean_crops mean_b (Σ_masked CE / max(1, #masked))`` (a scalar, fp32).
        """
        _check_temperatures(teacher_temp, self.student_temp)
        if not len(teacher_out) == len(student_out) == len(masks) >= 1:
            raise EqbenchError("IBOTPatchLoss needs one teacher, student and mask per crop.")
        total = teacher_out[0].new_zeros((), dtype=torch.float32)
        for teacher, student, mask in zip(teacher_out, student_out, masks, strict=True):
            target = F.softmax((teacher.float() - self.center) / teacher_temp, dim=-1).detach()
            log_p = F.log_softmax(student.float() / self.student_temp, dim=-1)  # (B, N, K)
            per_token = torch.sum(-target * log_p, dim=-1)  # (B, N)
            weight = mask.float()
            per_image = (per_token * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
            total = total + per_image.mean()
        loss = total / len(teacher_out)
        self.update_center(torch.cat([t.flatten(0, 1) for t in teacher_out]))
        return loss

    @torch.no_grad()
    def update_center(self, teacher_tokens: Tensor) -> None:
        """Centre EMA with the mean over all teacher tokens ``(M, K)`` and processes."""
        batch_center = _mean_over_ranks(teacher_tokens.float().mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
