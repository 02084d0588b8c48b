"""``--set key=value`` overrides: parsed from the command line and applied to plain dicts."""

from __future__ import annotations

from typing import Any

from eqbench.errors import ConfigError


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML 1.2 (``n_train=2000``,
    ``ks=[10,20]``, ``lr=1e-3``)."""
    import yaml

    from eqbench.yamlfiles import safe_load

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Bad --set '{item}'. Use --set key=value.")
        try:
            out[key.strip()] = safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Bad value in --set '{item}': {exc}") from None
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides`` applied; ``a.b`` keys set entry ``b`` of mapping ``a``.

    The one ``--set`` dialect of ``eqbench pretrain`` and ``eqbench eval``
    (``--set method_options.d_equi=96``, ``--set options.degrees=[-10,10]``).
    """
    out = dict(data)
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if dot:
            inner = out.get(head, {})
            if not isinstance(inner, dict):
                raise ConfigError(f"Cannot --set '{key}': '{head}' is not a mapping.")
            out[head] = apply_overrides(inner, {rest: value})
        else:
            out[key] = value
    return out
