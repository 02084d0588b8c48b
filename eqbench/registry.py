"""One registry class for backbones, datasets, transformations and evaluation protocols.

Things register themselves where they are defined (as in timm's ``@register_model``)::

    DATASETS = Registry("dataset", "eqbench ls datasets")

    @DATASETS.register("photos")
    def photos(...): ...

A registration may carry a one-line ``description`` (otherwise the first paragraph of the
object's docstring describes it). A *family* (:meth:`Registry.derive`) resolves names such as
``tir+<base>`` lazily, on lookup, for every base that exists at that moment, so a base registered
later (by a plugin, say) gets its variant too.

Unknown names fail with a did-you-mean suggestion and the command that lists what exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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


def first_paragraph(obj: object) -> str:
    """The first paragraph of ``obj``'s docstring, on one line (empty without a docstring)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())


@dataclass(frozen=True)
class Family(Generic[T]):
    """Names ``prefix + base`` for every ``base`` in ``bases()``, made on lookup by ``make``."""

    prefix: str
    bases: Callable[[], Iterable[str]]
    make: Callable[[str], T]


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
        self._descriptions: dict[str, str] = {}
        self._families: list[Family[T]] = []

    def register(self, name: str, *, description: str | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; names never change once used.

        Args:
            name: the registry name (``snake_case``).
            description: one line for ``eqbench ls`` (default: the docstring's first paragraph).
        """

        def deco(obj: T) -> T:
            self.add(name, obj, description=description)
            return obj

        return deco

    def add(self, name: str, obj: T, *, description: str | None = None) -> None:
        """Register ``obj`` under ``name`` (what :meth:`register` does, without decorating)."""
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        if "\n" in (description or ""):
            raise ValueError(f"{self.kind} '{name}': the description must be one line")
        self._items[name] = obj
        if description:
            self._descriptions[name] = description

    def remove(self, name: str) -> None:
        """Unregister ``name`` (for plugins reloaded in one process, and tests)."""
        del self._items[name]
        self._descriptions.pop(name, None)

    def derive(
        self, prefix: str, bases: Callable[[], Iterable[str]], make: Callable[[str], T]
    ) -> None:
        """Add the family ``prefix + base``, resolved on every lookup (nothing is cached).

        Args:
            prefix: what the family's names start with (``"tir+"``).
            bases: the bases that have a member now (called on each lookup and listing).
            make: the object of ``prefix + base``.
        """
        self._families.append(Family(prefix, bases, make))

    def _derived(self, name: str) -> T | None:
        for family in self._families:
            base = name.removeprefix(family.prefix)
            if base != name and base in set(family.bases()):
                return family.make(base)
        return None

    def get(self, name: str) -> T:
        """Look ``name`` up, or raise an :class:`EqbenchError` with a did-you-mean hint."""
        if name in self._items:
            return self._items[name]
        derived = self._derived(name)
        if derived is not None:
            return derived
        hint = did_you_mean(name, self.names())
        raise EqbenchError(
            f"Unknown {self.kind} '{name}'.{hint} Run `{self.list_command}` to see them all."
        )

    def describe(self, name: str) -> str:
        """One line about ``name``: its registered description, else its docstring's first
        paragraph."""
        return self._descriptions.get(name) or first_paragraph(self.get(name))

    def names(self) -> list[str]:
        """Registered names and every family member that exists now, sorted."""
        derived = {f.prefix + base for f in self._families for base in f.bases()}
        return sorted(set(self._items) | derived)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or self._derived(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
