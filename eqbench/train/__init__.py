"""The pretraining engine: typed configs, a resumable (and distributed) training loop.

``pretrain(load_pretrain_config("vicreg_photos_cpu"), "runs/vicreg")`` is the library door;
``eqbench pretrain`` (:mod:`eqbench.train.cli`) is the thin command over it. Names are imported
lazily so that ``eqbench --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PretrainConfig": "eqbench.train.config",
    "available_configs": "eqbench.train.config",
    "configs_dir": "eqbench.train.config",
    "load_pretrain_config": "eqbench.train.config",
    "CHECKPOINT_NAME": "eqbench.train.engine",
    "TEACHER_CHECKPOINT_NAME": "eqbench.train.engine",
    "CONFIG_NAME": "eqbench.train.engine",
    "LOG_NAME": "eqbench.train.engine",
    "pretrain": "eqbench.train.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eqbench.train' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
