"""The one door to models: :func:`load_model` loads whatever a model spec names.

A spec is a path (an eqbench checkpoint) or ``scheme:rest``; every scheme registers itself where
its loader is defined (:mod:`eqbench.checkpoints.schemes`): ``timm:``, ``hf-hub:`` and
``baseline:`` in :mod:`eqbench.checkpoints.spec`, ``zoo:`` in :mod:`eqbench.zoo.load`. Importing
this module imports them all; adding a scheme is one decorated function in a module listed in
:data:`SCHEME_MODULES`.
"""

from __future__ import annotations

import importlib

from eqbench.checkpoints.schemes import SCHEMES, accepted_forms, describe
from eqbench.checkpoints.spec import LoadedModel, load_path

#: Modules whose import registers model-spec schemes.
SCHEME_MODULES = ("eqbench.checkpoints.spec", "eqbench.zoo.load")
for _module in SCHEME_MODULES:
    importlib.import_module(_module)

__all__ = ["SCHEMES", "LoadedModel", "accepted_forms", "describe", "load_model"]


def load_model(spec: str, *, img_size: int) -> LoadedModel:
    """Load the model a spec names (``eqbench ls schemes`` lists the forms).

    Args:
        spec: the model spec.
        img_size: image size the backbone is built for; eqbench checkpoints keep the size they
            were saved with (ViTs run at any size).

    Returns:
        The :class:`~eqbench.checkpoints.spec.LoadedModel`, encoder in eval mode on the CPU.

    Raises:
        CheckpointError: unknown scheme, missing path, unreadable or mismatched weights.
    """
    name, sep, rest = spec.partition(":")
    if sep and name in SCHEMES:
        return SCHEMES.get(name).load(spec, rest, img_size)
    return load_path(spec, img_size)
