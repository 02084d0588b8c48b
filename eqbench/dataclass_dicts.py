"""Dataclasses built from plain dicts (YAML, ``--set``), validated with did-you-mean, and back.

The typed configs themselves live beside what they configure (a protocol's ``Config``,
:class:`eqbench.train.config.PretrainConfig`); ``--set`` strings are parsed in
:mod:`eqbench.overrides`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar, Union, get_args, get_origin

from eqbench.errors import ConfigError
from eqbench.registry import did_you_mean

C = TypeVar("C")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check (and lightly coerce) ``value`` against the annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}.")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}.")
        if not math.isfinite(value):  # .nan / .inf pass every range check written as a < x
            raise ConfigError(f"{where} must be a finite number, got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}.")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}.")
        return value
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str) -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    Args:
        cls: a dataclass type.
        data: the mapping read from YAML or ``--set`` options.
        where: names the source in error messages (e.g. ``"task synthetic/rotation"``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            hint = did_you_mean(key, list(fields))
            raise ConfigError(
                f"{where}: unknown option '{key}'.{hint} Valid options: {', '.join(fields)}."
            )
        kwargs[key] = _check_type(value, hints[key], f"{where}: '{key}'")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required option(s): {', '.join(missing)}.")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-able dict (tuples become lists)."""
    out: dict[str, Any] = dataclasses.asdict(obj)
    result: dict[str, Any] = _jsonable(out)
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x
