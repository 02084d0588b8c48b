"""Gradient clipping as the reference recipes do it: over all parameters, per parameter, or per
sub-module.

* ``global`` — one norm over every gradient (``torch.nn.utils.clip_grad_norm_``);
* ``per_parameter`` — each parameter's gradient clipped to its own norm, as DINO, iBOT and GTSA
  (``utils.clip_gradients``);
* ``per_module`` — one norm per student sub-module (backbone, each head), as DINOv2, whose train
  loop calls ``clip_grad_norm_`` on every module of ``model.student``.

Each returns the norm of all gradients together *before* clipping, which is what the engine logs
as ``grad_norm``, whatever the mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from eqbench.train.config import CLIP_MODES


def _grads(parameters: Iterable[nn.Parameter]) -> list[Tensor]:
    return [p.grad for p in parameters if p.grad is not None]


def _total_norm(norms: list[Tensor]) -> float:
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([n.float() for n in norms])))


def clip_per_parameter(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scale each gradient whose L2 norm exceeds ``max_norm`` down to it, one parameter at a time.

    The formula of DINO (``facebookresearch/dino``, ``utils.py`` lines 132–141, ``clip_gradients``;
    the same function is in ``bytedance/ibot`` ``utils.py`` lines 154–163 and in ``bok3948/GTSA``
    ``util/misc.py`` lines 20–28): ``g ← g · min(1, max_norm / (‖g‖ + 1e-6))``.

    Returns:
        The norm of all gradients together before clipping.
    """
    norms = []
    for grad in _grads(parameters):
        norm = torch.linalg.vector_norm(grad.detach().float())
        norms.append(norm)
        # DINO multiplies only when the coefficient is < 1; multiplying by 1 is the same
        grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0).to(grad.dtype))
    return _total_norm(norms)


def clip_per_module(groups: Mapping[str, list[nn.Parameter]], max_norm: float) -> float:
    """``clip_grad_norm_`` on each group of parameters separately.

    DINOv2 (``facebookresearch/dinov2``, ``dinov2/train/train.py`` lines 250–259): ``for v in
    model.student.values(): v.clip_grad_norm_(cfg.optim.clip_grad)``, the student being the
    backbone, the DINO head and the iBOT head.

    Returns:
        The norm of all gradients together before clipping.
    """
    norms = []
    for params in groups.values():
        if _grads(params):
            norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return _total_norm(norms)


def module_groups(model: nn.Module, owner: str = "encoder") -> dict[str, list[nn.Parameter]]:
    """The trainable parameters of ``model`` by top-level sub-module.

    Parameters registered on ``model`` itself (iBOT's and DINOv2's mask token) join the group of
    ``owner``, the backbone, as in DINOv2 where the mask token belongs to the backbone.
    """
    groups: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head, dot, _ = name.partition(".")
        groups.setdefault(head if dot else owner, []).append(param)
    return groups


def clip_gradients(model: nn.Module, max_norm: float, mode: str) -> float:
    """Clip the gradients of ``model`` in place with ``mode`` (one of :data:`CLIP_MODES`).

    Returns:
        The norm of all gradients together before clipping.
    """
    if mode == "global":
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    if mode == "per_parameter":
        return clip_per_parameter(model.parameters(), max_norm)
    if mode == "per_module":
        return clip_per_module(module_groups(model), max_norm)
    raise ValueError(f"unknown gradient clipping mode {mode!r}; use one of {CLIP_MODES}")
