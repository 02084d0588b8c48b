"""Model-spec schemes: ``timm:``, ``hf-hub:``, ``baseline:``, ``zoo:`` and whatever is added.

Each scheme registers itself where its loader is defined (as timm's ``@register_model``)::

    @scheme("timm", forms=("timm:<name>", ...), help="a timm architecture ...")
    def load_timm(spec: str, rest: str, img_size: int) -> LoadedModel: ...

:func:`eqbench.models.load_model` dispatches on the registry; the accepted forms named in errors
and in ``--help`` are derived from it (:func:`accepted_forms`), so a new scheme is one decorated
function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eqbench.registry import Registry

if TYPE_CHECKING:
    from eqbench.checkpoints.spec import LoadedModel

#: ``(spec, rest after "scheme:", img_size) -> LoadedModel``.
Loader = Callable[[str, str, int], "LoadedModel"]

#: The form a plain path takes (no scheme).
PATH_FORM = "a path to an eqbench checkpoint (.pt/.pth/.ckpt/.safetensors)"


@dataclass(frozen=True)
class Scheme:
    """A registered model-spec scheme.

    Attributes:
        load: the loader.
        forms: the spellings it accepts (``timm:<name>.<tag>``), shown in errors and ``--help``.
        help: one line on what it loads.
    """

    load: Loader
    forms: tuple[str, ...]
    help: str


SCHEMES: Registry[Scheme] = Registry("model scheme", "eqbench ls schemes")


def scheme(name: str, *, forms: tuple[str, ...], help: str) -> Callable[[Loader], Loader]:
    """Register the decorated loader as the ``name:`` scheme."""

    def deco(load: Loader) -> Loader:
        SCHEMES.register(name)(Scheme(load, forms, help))
        return load

    return deco


def accepted_forms() -> str:
    """Every accepted spelling of a model spec, for error messages."""
    forms = [f"'{f}'" for n in SCHEMES for f in SCHEMES.get(n).forms]
    return ", ".join([PATH_FORM, *forms[:-1]]) + f" or {forms[-1]}" if forms else PATH_FORM


def describe() -> str:
    """A sentence per scheme (``--help`` of the commands that take a model spec)."""
    parts = [f"PATH ({PATH_FORM})"]
    parts += [f"{' | '.join(SCHEMES.get(n).forms)}: {SCHEMES.get(n).help}" for n in SCHEMES]
    return "; ".join(parts) + "."
