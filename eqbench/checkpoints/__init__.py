"""Loading and saving model weights safely (no code execution, strict architecture matching).

Models are loaded by spec through :func:`eqbench.models.load_model`, the one door that knows
every scheme."""

from __future__ import annotations

from eqbench.checkpoints.eqbench_format import load_eqbench_checkpoint, save_checkpoint
from eqbench.checkpoints.safe_load import load_state_file
from eqbench.checkpoints.spec import LoadedModel, sha256_file, sha256_state_dict

__all__ = [
    "LoadedModel",
    "load_eqbench_checkpoint",
    "load_state_file",
    "save_checkpoint",
    "sha256_file",
    "sha256_state_dict",
]
