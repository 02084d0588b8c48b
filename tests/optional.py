"""Optional components: a test that needs one skips where it is missing, unless the run requires it.

``EQBENCH_REQUIRE`` (comma-separated component names, or ``all``) turns those skips into failures:
``scripts/test.sh`` sets it, so CI fails, not skips, when OpenMMLab, Chromium, Playwright, lightly
or TensorBoard did not install.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

#: The components the suite knows; ``EQBENCH_REQUIRE=all`` requires every one.
COMPONENTS = ("openmmlab", "chromium", "playwright", "lightly", "tensorboard")


def required(component: str) -> bool:
    """Whether this run must have ``component`` (``EQBENCH_REQUIRE``)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown optional component {component!r}; known: {COMPONENTS}")
    wanted = {c.strip() for c in os.environ.get("EQBENCH_REQUIRE", "").split(",") if c.strip()}
    return "all" in wanted or component in wanted


def missing(component: str, reason: str | None) -> None:
    """Skip (or, where required, fail) the calling test or module when ``reason`` is not None."""
    if reason is None:
        return
    if required(component):
        pytest.fail(
            f"{component} is required in this run (EQBENCH_REQUIRE) but missing: {reason}",
            pytrace=False,
        )
    pytest.skip(reason, allow_module_level=True)


def import_or_skip(component: str, module: str) -> ModuleType:
    """``pytest.importorskip`` that fails instead where ``component`` is required."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing(component, f"could not import {module}: {err}")
        raise  # unreachable: missing() skipped or failed


def chromium() -> str | None:
    """The Chromium executable on PATH, if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")
