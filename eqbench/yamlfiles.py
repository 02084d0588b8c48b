"""Reading eqbench's YAML files (task files, pretraining configs) with ``include:`` chains.

A file may start with ``include: other.yaml`` (relative to itself) to extend another file; nested
mappings merge key by key, the including file winning. Errors name the file and the remedy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eqbench.errors import ConfigError


def read_yaml(path: Path, kind: str = "Config") -> dict[str, Any]:
    """The mapping in ``path``; ``kind`` (``"Task file"``, ``"Config"``) starts error messages."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{kind} '{path}' is not valid YAML{where}. Fix its syntax.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} '{path}' must hold a mapping of keys, not {data!r}.")
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, merging nested mappings key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_with_includes(
    path: Path, kind: str = "Config", seen: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """The mapping in ``path`` with its ``include:`` chain resolved (cycles are errors)."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{kind} '{path}' includes itself ({chain}). Break the cycle.")
    data = read_yaml(path, kind)
    include = data.pop("include", None)
    if include is None:
        return data
    base_path = path.parent / str(include)
    if not base_path.is_file():
        raise ConfigError(
            f"{kind} '{path}' includes '{include}', which does not exist (paths are relative to "
            "the including file)."
        )
    return merge(read_with_includes(base_path, kind, (*seen, path)), data)
