"""Model-zoo cards: ``model_zoo/<id>.yaml``, one per submitted checkpoint.

A card says what the checkpoint is and how to load it again, and pins it by hash::

    id: dino-vits16
    format: dino            # eqbench.checkpoints.formats
    arch: vit_small_patch16_224
    weights: /data/ckpt/dino_deitsmall16_pretrain.pth
    sha256: 3f0c...
    source: https://github.com/facebookresearch/dino
    licence: Apache-2.0
    preprocessing: {img_size: 224, mean: [...], std: [...]}
    dropped_keys: [head.mlp.0.weight, ...]
    provenance: {submitted_at: ..., eqbench_version: ..., git_commit: ...}

``zoo:<id>`` loads it anywhere a checkpoint is taken, after checking the file's sha256.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eqbench.atomic import write_text
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import CheckpointError, ConfigError
from eqbench.registry import did_you_mean
from eqbench.resources import packaged_dir, shipped_dir
from eqbench.yamlfiles import read_yaml

CARD_VERSION = 1


@dataclass
class ZooCard:
    """One model-zoo entry (see the module docstring)."""

    id: str
    format: str
    arch: str
    weights: str
    sha256: str
    source: str = ""
    licence: str = "unknown"
    preprocessing: dict[str, Any] = field(default_factory=dict)
    dropped_keys: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self), sort_keys=False)


def zoo_dir() -> Path:
    """``$EQBENCH_ZOO_DIR`` or the shipped ``model_zoo/`` (:func:`eqbench.resources.shipped_dir`:
    the installed copy or the checkout's)."""
    env = os.environ.get("EQBENCH_ZOO_DIR")
    return Path(env) if env else shipped_dir("model_zoo")


def writable_zoo_dir(zoo: Path | None = None) -> Path:
    """The folder a new card goes to: ``zoo``, else :func:`zoo_dir` unless that is the copy
    inside an installed wheel (``site-packages/eqbench/_shipped/model_zoo``), which a
    reinstall would silently wipe.

    Raises:
        ConfigError: no ``zoo`` given and no ``$EQBENCH_ZOO_DIR`` in an installed eqbench.
    """
    if zoo is not None:
        return zoo
    folder = zoo_dir()
    if not os.environ.get("EQBENCH_ZOO_DIR") and folder == packaged_dir("model_zoo"):
        raise ConfigError(
            "eqbench is installed as a package, so its model_zoo/ is inside site-packages and a "
            "card written there is lost on the next install. Set EQBENCH_ZOO_DIR=DIR to keep your "
            "cards in a folder of your own (every command reads zoo:ID cards from there)."
        )
    return folder


def card_ids(folder: Path | None = None) -> list[str]:
    folder = folder or zoo_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


#: What a zoo id may be (as ``eqbench submit`` allows): no path separators, no leading dot.
CARD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def card_path(card_id: str, folder: Path | None = None) -> Path:
    """``<zoo>/<card_id>.yaml``.

    Raises:
        CheckpointError: ``card_id`` is not a zoo id (``zoo:../x`` must not reach outside the
            zoo folder).
    """
    if not CARD_ID.fullmatch(card_id):
        raise CheckpointError(
            f"{card_id[:100]!r} is not a zoo id: ids use letters, digits, '.', '_' and '-' and "
            "start with a letter or digit. Run `eqbench zoo ls`."
        )
    return (folder or zoo_dir()) / f"{card_id}.yaml"


def read_card(card_id: str, folder: Path | None = None) -> ZooCard:
    """The card of ``card_id``.

    Raises:
        CheckpointError: no such card (did-you-mean) or a malformed card.
    """
    path = card_path(card_id, folder)
    if not path.is_file():
        ids = card_ids(folder)
        raise CheckpointError(
            f"No model-zoo card '{card_id}'.{did_you_mean(card_id, ids)} Run `eqbench zoo ls`, "
            "or add one with `eqbench submit`."
        )
    try:
        data = read_yaml(path, "Zoo card")
    except ConfigError as err:
        raise CheckpointError(f"{err} Or re-submit the checkpoint.") from None
    try:
        card = from_dict(ZooCard, data, f"zoo card '{path}'")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    if card.id != card_id:
        raise CheckpointError(f"Zoo card '{path}' says id '{card.id}'; rename the file or the id.")
    return card


def write_card(card: ZooCard, folder: Path | None = None, overwrite: bool = False) -> Path:
    """Write ``card`` atomically; refuses to replace an existing card unless ``overwrite``."""
    path = card_path(card.id, folder)
    if path.exists() and not overwrite:
        raise CheckpointError(
            f"Zoo card '{path}' already exists. Choose another --id, or pass --force to replace it."
        )
    write_text(path, card.to_yaml())
    return path


def weights_path(card: ZooCard, folder: Path | None = None) -> Path:
    """The card's weight file (relative paths are relative to the zoo folder)."""
    path = Path(card.weights).expanduser()
    return path if path.is_absolute() else (folder or zoo_dir()) / path
