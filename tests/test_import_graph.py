"""The package's import graph has no cycle, and a model-spec scheme is one decorated function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

import eqbench
from eqbench.checkpoints.schemes import SCHEMES, Scheme, accepted_forms, scheme
from eqbench.checkpoints.spec import LoadedModel, load_baseline
from eqbench.cli import main
from eqbench.errors import CheckpointError
from eqbench.models import load_model

ROOT = Path(eqbench.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports, at module level or inside functions (a
    deferred import is still a dependency); ``if TYPE_CHECKING:`` blocks are left out."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*pkg, base] if base else pkg)
            for alias in node.names:  # `from pkg import submodule` depends on the submodule
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return {m for m in out if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, name, modules) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "eqbench.checkpoints.spec" in graph["eqbench.models"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_checkpoints_do_not_import_the_zoo() -> None:
    """The zoo sits above the checkpoint loaders, never below them."""
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("eqbench.checkpoints"):
            assert not any(d.startswith("eqbench.zoo") for d in deps), (name, deps)


def test_a_new_scheme_is_one_decorated_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered from a test module: dispatched by load_model, listed by `eqbench ls schemes`
    and named in the accepted forms of errors."""
    monkeypatch.setattr(SCHEMES, "_items", dict(SCHEMES._items))

    @scheme("toy", forms=("toy:<grid>",), help="raw pixels on a toy grid")
    def load_toy(spec: str, rest: str, img_size: int) -> LoadedModel:
        return load_baseline(spec, f"pixels:{rest}", img_size)

    model = load_model("toy:4", img_size=32)
    assert model.spec == "toy:4" and model.info["grid"] == 4
    assert "'toy:<grid>'" in accepted_forms()
    listing = CliRunner().invoke(main, ["ls", "schemes"])
    assert listing.exit_code == 0 and "toy:" in listing.output
    assert isinstance(SCHEMES.get("toy"), Scheme)
    with pytest.raises(CheckpointError, match=r"unknown model scheme 'tyo:'.*'toy:<grid>'"):
        load_model("tyo:4", img_size=32)


def test_help_and_errors_come_from_the_registry() -> None:
    help_text = CliRunner().invoke(main, ["eval", "--help"]).output
    for name in ("timm:<name>.<tag>", "hf-hub:<org>/<name>", "baseline:random:<arch>", "zoo:<id>"):
        assert name in " ".join(help_text.split()), name
    formats = CliRunner().invoke(main, ["ls", "formats"]).output
    assert all(f in formats for f in ("eqbench", "dinov2", "solo-learn"))
    bad = CliRunner().invoke(main, ["submit", "x.pt", "--id", "x", "--format", "dinov3"])
    assert bad.exit_code != 0 and "Did you mean 'dinov2'" in bad.output
