"""Learning-rate, weight-decay and teacher-momentum schedules, and the AdamW parameter groups.

As in DINO (Caron et al., ICCV 2021, arXiv 2104.14294, ``utils.cosine_scheduler`` and
``get_params_groups``): a linear warm-up of the learning rate followed by a cosine decay to
``min_lr``, a cosine schedule of the weight decay over the whole run, a cosine schedule of the
EMA teacher's momentum (0.996 → 1), and no weight decay on biases and normalisation parameters.
Every schedule is a pure function of the step, so resuming needs only the step.
"""

from __future__ import annotations

import math

from torch import nn

from eqbench.train.config import PretrainConfig


def cosine(start: float, end: float, progress: float) -> float:
    """``end + (start − end)·(1 + cos(π·progress))/2`` for ``progress`` in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Learning rate of 0-based ``step``: warm-up ``peak·(step+1)/warmup``, then cosine."""
    peak = cfg.peak_lr
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    return cosine(peak, cfg.min_lr, (step - cfg.warmup_steps) / span)


def weight_decay(cfg: PretrainConfig, step: int) -> float:
    """Weight decay of 0-based ``step``: cosine from ``weight_decay`` to ``weight_decay_end``."""
    if cfg.weight_decay_end is None:
        return cfg.weight_decay
    return cosine(cfg.weight_decay, cfg.weight_decay_end, step / max(1, cfg.steps - 1))


def teacher_momentum(cfg: PretrainConfig, step: int) -> float:
    """EMA momentum of the teacher after 0-based ``step``: cosine from ``teacher_momentum`` to
    ``teacher_momentum_end`` over the run (DINO's ``momentum_schedule``; **eqbench default**:
    progress ``step / (steps − 1)``, as the weight decay, so the last step uses the end value)."""
    progress = step / max(1, cfg.steps - 1)
    return cosine(cfg.teacher_momentum, cfg.teacher_momentum_end, progress)


def parameter_groups(model: nn.Module) -> list[dict[str, object]]:
    """``[{"params": decayed}, {"params": not decayed, "no_decay": True}]`` for AdamW.

    Biases and one-dimensional parameters (norm scales) are not decayed.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or param.ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay}, {"params": no_decay, "no_decay": True}]
