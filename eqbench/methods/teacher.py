"""The EMA teacher of self-distillation methods (DINO, arXiv 2104.14294, section 3.1).

The teacher is a frozen copy of some of the student's modules (backbone and heads), updated after
every optimiser step by ``θ_t ← m·θ_t + (1 − m)·θ_s`` with the momentum ``m`` scheduled by the
engine (0.996 → 1, cosine). It is a submodule of its method, so checkpoints save and restore it
with the rest of the method's state; it takes no gradient and is left out of the optimiser.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


class EMATeacher(nn.ModuleDict):
    """Frozen copies of the student's modules, by name.

    Args:
        student: ``name → module`` to copy (e.g. ``{"encoder": ..., "head": ...}``).
    """

    def __init__(self, student: Mapping[str, nn.Module]) -> None:
        super().__init__({name: copy.deepcopy(module) for name, module in student.items()})
        self.requires_grad_(False)
        self.eval()

    def mirror(self, name: str, module: nn.Module) -> None:
        """Add a frozen copy of one more student module (a head built after the teacher)."""
        self[name] = copy.deepcopy(module).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> EMATeacher:
        """Stay in eval mode: the teacher has no drop-path or dropout (as DINO's teacher)."""
        return super().train(False)

    @torch.no_grad()
    def ema_update(self, student: Mapping[str, nn.Module], momentum: float) -> None:
        """``θ_t ← m·θ_t + (1 − m)·θ_s`` for every parameter, matched by name."""
        if not 0 <= momentum <= 1:
            raise ValueError(f"teacher momentum must lie in [0, 1], got {momentum}")
        for name, teacher_module in self.items():
            source = dict(student[name].named_parameters())
            for key, param in teacher_module.named_parameters():
                param.mul_(momentum).add_(source[key].detach(), alpha=1 - momentum)
