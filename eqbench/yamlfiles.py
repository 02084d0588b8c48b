"""Reading eqbench's YAML files (task files, pretraining configs) with ``include:`` chains.

A file may start with ``include: other.yaml`` (relative to itself) to extend another file; nested
mappings merge key by key, the including file winning. An include must stay inside the file's
tree (the task folder, or the folder of the config named on the command line): an absolute path
or one that climbs out is refused. Errors name the file and the remedy, and never quote a file's
content (an include pointing at a secret must not print it into a CI log).

Numbers are read as YAML 1.2 has them: ``1e-3`` is a float (YAML 1.1, which PyYAML implements,
needs ``1.0e-3`` and reads ``1e-3`` as a string).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from eqbench.errors import ConfigError


class SafeLoader12(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax (``1e-3``, ``.5``, ``1E+10``)."""


SafeLoader12.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (:class:`SafeLoader12`)."""
    return yaml.load(text, Loader=SafeLoader12)  # a SafeLoader subclass: no code runs


def read_yaml(path: Path, kind: str = "Config") -> dict[str, Any]:
    """The mapping in ``path``; ``kind`` (``"Task file"``, ``"Config"``) starts error messages."""
    try:
        data = safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{kind} '{path}' is not UTF-8 text (byte {exc.start}). Save it as UTF-8."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{kind} '{path}' is not valid YAML{where}. Fix its syntax.") from None
    except OSError as exc:
        raise ConfigError(f"{kind} '{path}' cannot be read ({exc.strerror}).") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{kind} '{path}' must hold a mapping of keys, not a {type(data).__name__}. "
            "Fix the file."
        )
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
    path: Path, kind: str = "Config", seen: tuple[Path, ...] = (), root: Path | None = None
) -> dict[str, Any]:
    """The mapping in ``path`` with its ``include:`` chain resolved (cycles are errors).

    Args:
        path: the file.
        kind: starts error messages (``"Task file"``, ``"Config"``).
        seen: the files including this one (cycle detection).
        root: includes must resolve inside this folder (default: ``path``'s folder).
    """
    path = path.resolve()
    tree = (root or path.parent).resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{kind} '{path}' includes itself ({chain}). Break the cycle.")
    data = read_yaml(path, kind)
    include = data.pop("include", None)
    if include is None:
        return data
    if not isinstance(include, str) or not include or Path(include).is_absolute():
        raise ConfigError(
            f"{kind} '{path}': 'include' must be a relative path to a YAML file beside it "
            f"(inside '{tree}'). Fix the include."
        )
    base_path = (path.parent / include).resolve()
    if not base_path.is_relative_to(tree):
        raise ConfigError(
            f"{kind} '{path}' includes '{include}', which lies outside '{tree}'. Includes must "
            "stay inside the task or config folder; copy the file there."
        )
    if not base_path.is_file():
        raise ConfigError(
            f"{kind} '{path}' includes '{include}', which does not exist (paths are relative to "
            "the including file)."
        )
    return merge(read_with_includes(base_path, kind, (*seen, path), tree), data)
