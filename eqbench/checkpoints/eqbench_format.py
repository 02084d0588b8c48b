"""The self-describing eqbench checkpoint: backbone weights plus what rebuilds the backbone.

Torch files (``.pt``/``.pth``/``.ckpt``) hold a dict::

    {"eqbench": {"format_version": 1, "eqbench_version": ..., "backbone": {"name", "kwargs"},
                 "method": ..., "config": {...}, ["name": ...]},
     "backbone": encoder.state_dict(),
     **extra_state}

``.safetensors`` files hold the backbone weights with that header, as JSON, in
``metadata["eqbench"]`` (they cannot carry ``extra_state``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

import eqbench
from eqbench.atomic import write_with
from eqbench.backbones import Encoder, create_encoder
from eqbench.backbones.options import check_backbone_options
from eqbench.checkpoints.safe_load import load_state_file
from eqbench.errors import CheckpointError, EqbenchError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
HEADER_KEY = "eqbench"
BACKBONE_KEY = "backbone"
#: How many offending keys an error message lists.
MAX_KEYS_SHOWN = 4


def _is_safetensors(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() == ".safetensors"


def _plain_header(header: dict[str, Any]) -> dict[str, Any]:
    """``header`` as JSON-round-tripped plain data (tuples become lists)."""
    try:
        out: dict[str, Any] = json.loads(json.dumps(header, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"Cannot save checkpoint: method/config/backbone description must be plain JSON data "
            f"({err}). Convert paths, numpy values and objects to str/int/float/list/dict."
        ) from None
    return out


def save_checkpoint(
    path: str | os.PathLike[str],
    encoder: Encoder,
    *,
    method: str,
    config: dict[str, Any],
    extra_state: dict[str, Any] | None = None,
    name: str | None = None,
    trained_feature: str | None = None,
) -> None:
    """Write an eqbench checkpoint atomically.

    Args:
        path: destination; ``.safetensors`` writes weights + JSON header, anything else a torch
            file.
        encoder: the backbone; its :meth:`~Encoder.describe` and ``state_dict()`` are saved.
        method: training method that produced the weights (e.g. ``"tir"``, ``"random"``).
        config: JSON-serialisable training configuration.
        extra_state: more top-level entries for torch files (optimizer state, step, ...).
            Tensors and plain data only, so that it loads with ``weights_only=True``.
        name: optional model name, used as the model id when the checkpoint is loaded.
        trained_feature: the global feature the method's losses trained (``cls`` or
            ``avgpool``), which the ``feature: auto`` task option reads.

    Raises:
        CheckpointError: non-JSON config, ``extra_state`` with a ``.safetensors`` path, or
            ``extra_state`` using a reserved key.
    """
    header: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "eqbench_version": eqbench.__version__,
        "backbone": encoder.describe(),
        "method": method,
        "config": config,
    }
    if name is not None:
        header["name"] = name
    if trained_feature is not None:
        header["trained_feature"] = trained_feature
    header = _plain_header(header)
    weights = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}

    if _is_safetensors(path):
        if extra_state:
            raise CheckpointError(
                f"Cannot save extra_state ({', '.join(sorted(extra_state))}) to '{path}': "
                ".safetensors holds only the backbone weights. Use a .pt path."
            )
        tensors = {k: v.contiguous().clone() for k, v in weights.items()}
        metadata = {HEADER_KEY: json.dumps(header, sort_keys=True)}
        write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    else:
        extra = dict(extra_state or {})
        reserved = sorted({HEADER_KEY, BACKBONE_KEY} & set(extra))
        if reserved:
            raise CheckpointError(f"extra_state uses reserved key(s) {reserved}; rename them.")
        payload = {HEADER_KEY: header, BACKBONE_KEY: weights, **extra}
        write_with(path, lambda tmp: torch.save(payload, tmp))
    logger.info("saved %s checkpoint of %s to %s", method, header["backbone"]["name"], path)


def _shown(keys: list[str]) -> str:
    listed = ", ".join(keys[:MAX_KEYS_SHOWN])
    more = len(keys) - MAX_KEYS_SHOWN
    return f"{listed} (+{more} more)" if more > 0 else listed


def check_state_dict(
    module: nn.Module, state: dict[str, Any], *, source: str, target: str, remedy: str
) -> None:
    """Raise unless ``state`` has exactly ``module``'s keys and shapes.

    Args:
        module: the model the weights are meant for.
        state: name → tensor.
        source: what the weights are, for the message (``"Checkpoint 'x.pt'"``).
        target: what the model is, for the message (``"micro_vit {...}"``).
        remedy: the sentence telling the user what to do.

    Raises:
        CheckpointError: listing a few missing, unexpected and shape-mismatched keys.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if not isinstance(state[k], Tensor) or state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shown(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (checkpoint vs model): {_shown(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the architecture {target}: {'; '.join(problems)}. {remedy}"
        )


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(header, backbone weights, extra state)`` of an eqbench checkpoint file."""
    state, metadata = load_state_file(path)
    not_ours = (
        f"Checkpoint '{path}' is not an eqbench checkpoint (no '{HEADER_KEY}' header). "
        "Load plain weights with 'timm:<model-name>:<path>', or save with "
        "eqbench.checkpoints.save_checkpoint."
    )
    extra: dict[str, Any] = {}
    header: Any
    weights: Any
    if _is_safetensors(path):
        if HEADER_KEY not in metadata:
            raise CheckpointError(not_ours)
        try:
            header = json.loads(metadata[HEADER_KEY])
        except json.JSONDecodeError as err:
            raise CheckpointError(
                f"Checkpoint '{path}' has an unreadable eqbench header ({err}). Re-save it."
            ) from None
        weights = state
    else:
        header = state.get(HEADER_KEY)
        weights = state.get(BACKBONE_KEY)
        if not isinstance(header, dict):
            raise CheckpointError(not_ours)
        if not isinstance(weights, dict):
            raise CheckpointError(
                f"Checkpoint '{path}' has no '{BACKBONE_KEY}' weights dict. Re-save it."
            )
        extra = {k: v for k, v in state.items() if k not in (HEADER_KEY, BACKBONE_KEY)}
    if not isinstance(header, dict):
        raise CheckpointError(not_ours)
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{path}' has format_version {version!r}; this eqbench "
            f"({eqbench.__version__}) reads up to {FORMAT_VERSION}. Upgrade eqbench."
        )
    backbone = header.get("backbone")
    if (
        not isinstance(backbone, dict)
        or not isinstance(backbone.get("name"), str)
        or not isinstance(backbone.get("kwargs", {}), dict)
    ):
        raise CheckpointError(f"Checkpoint '{path}' has no valid backbone description. Re-save it.")
    return header, weights, extra


def _build_from_header(file: Path, name: str, kwargs: dict[str, Any]) -> Encoder:
    """The backbone a header describes, built only from allowed architecture options.

    The options are checked against :data:`eqbench.backbones.options.BACKBONE_OPTIONS` first,
    so a header can never make timm open a file (``checkpoint_path``), fetch weights
    (``pretrained``) or crash on a degenerate size; any error building it is one
    :class:`CheckpointError`.
    """
    where = f"Checkpoint '{file}'"
    try:
        check_backbone_options(kwargs, where)
        return create_encoder(name, **kwargs)
    except EqbenchError as err:
        detail = str(err).removeprefix(f"{where}: ")
        raise CheckpointError(
            f"{where} describes backbone {name[:80]!r}, which cannot be built: {detail}"
        ) from None
    except Exception as err:  # any other failure of the architecture code
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(
            f"{where} describes backbone {name[:80]!r} with options this eqbench cannot build "
            f"({type(err).__name__}: {detail}). Re-save it with this eqbench version."
        ) from None


def load_eqbench_checkpoint(path: str | os.PathLike[str]) -> tuple[Encoder, dict[str, Any]]:
    """Rebuild the encoder an eqbench checkpoint describes and load its weights strictly.

    Args:
        path: a file written by :func:`save_checkpoint`.

    Returns:
        ``(encoder, info)``: the encoder in eval mode, and the header (``format_version``,
        ``eqbench_version``, ``backbone``, ``method``, ``config``, optional ``name``) plus
        ``extra_state`` (the torch file's other top-level entries).

    Raises:
        CheckpointError: unreadable file, no eqbench header, unknown backbone, or weights that
            do not match the described architecture.
    """
    file = Path(path)
    header, weights, extra = _read_header(file)
    backbone = header["backbone"]
    name, kwargs = backbone["name"], dict(backbone.get("kwargs", {}))
    encoder = _build_from_header(file, name, kwargs)
    check_state_dict(
        encoder,
        weights,
        source=f"Checkpoint '{file}'",
        target=f"{name} {json.dumps(kwargs, sort_keys=True)}",
        remedy="The weights were saved from a different architecture; fix the backbone "
        "description (or the model) so they match, then re-save.",
    )
    encoder.load_state_dict(weights, strict=True)
    encoder.eval()
    info = {**header, "extra_state": extra}
    logger.info("loaded %s (%s) from %s", name, header.get("method"), file)
    return encoder, info
