"""Training state in checkpoints: everything to resume, as tensors and plain data only.

The checkpoint is an ordinary eqbench checkpoint (:func:`eqbench.checkpoints.save_checkpoint`:
header + ``backbone`` weights) with one more top-level entry, ``train_state``::

    {"step": int, "data_position": int, "world_size": int,
     "method_state": {name: tensor},   # heads, projectors, BN buffers: the method minus encoder
     "optimizer": AdamW state_dict,
     "rng": {"torch": uint8 tensor, "cuda": [uint8 tensors], "numpy": {...}, "python": {...}}}

Random-number-generator states are converted to tensors and numbers so the file loads with
``torch.load(weights_only=True)`` (:func:`eqbench.checkpoints.load_state_file`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eqbench.checkpoints import load_state_file, save_checkpoint
from eqbench.errors import CheckpointError
from eqbench.methods import Method

TRAIN_STATE_KEY = "train_state"
ENCODER_PREFIX = "encoder."


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states as tensors and numbers."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss": gauss,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only if the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    words = tuple(int(v) for v in python_state["state"].tolist())
    random.setstate((python_state["version"], words, python_state["gauss"]))


def method_state(method: Method) -> dict[str, torch.Tensor]:
    """The method's state dict without the encoder (saved separately as ``backbone``)."""
    return {
        k: v.detach().cpu()
        for k, v in method.state_dict().items()
        if not k.startswith(ENCODER_PREFIX)
    }


def save_training_checkpoint(
    path: Path,
    method: Method,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    data_position: int,
    world_size: int,
    config: dict[str, Any],
    name: str,
) -> None:
    """Write the resumable checkpoint atomically (the previous one stays until the rename)."""
    train_state = {
        "step": step,
        "data_position": data_position,
        "world_size": world_size,
        "method_state": method_state(method),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
    }
    save_checkpoint(
        path,
        method.encoder,
        method=method.name,
        config=config,
        extra_state={TRAIN_STATE_KEY: train_state},
        name=name,
        trained_feature=method.trained_feature,
    )


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's entries (``eqbench``, ``backbone``, ``train_state``), loaded safely.

    Raises:
        CheckpointError: unreadable, or not written by the pretraining engine.
    """
    state, _ = load_state_file(path)
    if TRAIN_STATE_KEY not in state or "backbone" not in state or "eqbench" not in state:
        raise CheckpointError(
            f"Checkpoint '{path}' has no training state, so a run cannot resume from it. "
            "Resume only from a checkpoint.pt written by `eqbench pretrain`."
        )
    return state


def restore_training_state(
    state: dict[str, Any], method: Method, optimizer: torch.optim.Optimizer
) -> tuple[int, int]:
    """Load weights, optimizer and RNG states; return ``(step, data_position)``."""
    train = state[TRAIN_STATE_KEY]
    full = {f"{ENCODER_PREFIX}{k}": v for k, v in state["backbone"].items()}
    full.update(train["method_state"])
    _load_strict(method, full)
    optimizer.load_state_dict(train["optimizer"])
    set_rng_state(train["rng"])
    return int(train["step"]), int(train["data_position"])


def _load_strict(module: nn.Module, state: dict[str, Any]) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"The checkpoint's weights do not fit the configured method ({first}). Resume with "
            "the run's own config.yaml, or start a new --out."
        ) from None
