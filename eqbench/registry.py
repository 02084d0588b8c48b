"""One registry class for backbones, datasets, transformations and evaluation protocols.

Things register themselves where they are defined (as in timm's ``@register_model``)::

    DATASETS = Registry("dataset", "eqbench ls datasets")

    @DATASETS.register("photos")
    def photos(...): ...

Unknown names fail with a did-you-mean suggestion and the command that lists what exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from eqbench.errors import EqbenchError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not close:
        # Also match on the last path component, so 'rotaton' finds 'synthetic/rotation'.
        tails = {c.rsplit("/", 1)[-1]: c for c in choices}
        close = [tails[c] for c in difflib.get_close_matches(name, list(tails), n=1, cutoff=0.5)]
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A name → object mapping with decorator registration and helpful lookups.

    Args:
        kind: What is registered, used in error messages ("dataset", "backbone", ...).
        list_command: The command that lists the registered names, named in error messages.
    """

    def __init__(self, kind: str, list_command: str) -> None:
        self.kind = kind
        self.list_command = list_command
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; names never change once used."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Look ``name`` up, or raise an :class:`EqbenchError` with a did-you-mean hint."""
        try:
            return self._items[name]
        except KeyError:
            hint = did_you_mean(name, self.names())
            raise EqbenchError(
                f"Unknown {self.kind} '{name}'.{hint} Run `{self.list_command}` to see them all."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
