"""Where the data files eqbench ships live: task files, pretraining configs and model-zoo cards.

In a source checkout (an editable install, or ``PYTHONPATH`` on the repository) they are the
top-level folders ``tasks/``, ``configs/`` and ``model_zoo/``. A wheel carries copies of them as
package data under ``eqbench/_shipped/`` (``setup.py`` copies them at build time), so a
non-editable ``pip install .`` has every task. :func:`shipped_dir` finds either, through
:mod:`importlib.resources`; nothing else in the package builds these paths.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from eqbench.errors import EqbenchError

#: The top-level folders that ship inside the wheel (``setup.py`` reads this tuple).
SHIPPED = ("tasks", "configs", "model_zoo")
#: Suffixes of the files that ship from them (weights and stray files never do).
SHIPPED_SUFFIXES = (".yaml", ".yml", ".md")
#: The package folder that holds the copies in an installed wheel.
PACKAGED = "_shipped"


def packaged_dir(name: str) -> Path:
    """Where an installed wheel keeps the shipped folder ``name`` (it need not exist)."""
    return Path(str(resources.files("eqbench").joinpath(PACKAGED, name)))


def checkout_dir(name: str) -> Path | None:
    """The top-level folder ``name`` of the source checkout eqbench is imported from, if any."""
    root = Path(__file__).resolve().parent.parent
    folder = root / name
    return folder if (root / "pyproject.toml").is_file() and folder.is_dir() else None


def shipped_dir(name: str) -> Path:
    """The shipped folder ``name`` (one of :data:`SHIPPED`): the installed copy, else the
    checkout's.

    Raises:
        EqbenchError: neither exists (a wheel built without ``setup.py``'s copy step).
    """
    if name not in SHIPPED:
        raise ValueError(f"'{name}' is not shipped; use one of {SHIPPED}.")
    packaged = packaged_dir(name)
    if packaged.is_dir():
        return packaged
    checkout = checkout_dir(name)
    if checkout is not None:
        return checkout
    raise EqbenchError(
        f"eqbench's '{name}/' folder is missing: neither '{packaged}' (an installed wheel) nor a "
        f"source checkout's '{name}/'. Reinstall eqbench (pip install .) or point the matching "
        "EQBENCH_* variable at the folder."
    )
