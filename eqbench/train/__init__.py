"""The pretraining engine: typed configs, a resumable (and distributed) training loop.

``pretrain(load_pretrain_config("vicreg_photos_cpu"), "runs/vicreg")`` is the library door;
``eqbench pretrain`` (:mod:`eqbench.train.cli`) is the thin command over it.
"""

from __future__ import annotations

from eqbench.train.config import (
    PretrainConfig,
    available_configs,
    configs_dir,
    load_pretrain_config,
)
from eqbench.train.engine import CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME, pretrain

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "PretrainConfig",
    "available_configs",
    "configs_dir",
    "load_pretrain_config",
    "pretrain",
]
