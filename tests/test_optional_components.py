"""tests/optional.py: a missing optional component skips, or fails where the run requires it."""

from __future__ import annotations

import pytest
from optional import COMPONENTS, import_or_skip, missing, required


def test_missing_component_skips_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EQBENCH_REQUIRE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not built"):
        missing("openmmlab", "not built")
    monkeypatch.setenv("EQBENCH_REQUIRE", "chromium, openmmlab")
    with pytest.raises(pytest.fail.Exception, match="openmmlab is required"):
        missing("openmmlab", "not built")
    with pytest.raises(pytest.skip.Exception):
        missing("lightly", "not installed")  # not in the list
    missing("openmmlab", None)  # present: nothing happens


def test_all_requires_every_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQBENCH_REQUIRE", "all")
    assert all(required(c) for c in COMPONENTS)
    with pytest.raises(pytest.fail.Exception, match="could not import"):
        import_or_skip("lightly", "eqbench_no_such_module")
    with pytest.raises(ValueError, match="unknown optional component"):
        required("chromim")


def test_ci_requires_the_components_it_installs() -> None:
    """scripts/test.sh (CI's command) sets EQBENCH_REQUIRE, so a failed install fails CI."""
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "scripts" / "test.sh").read_text()
    assert "EQBENCH_REQUIRE" in script
    for component in COMPONENTS:
        assert component in script, component
