"""The committed leaderboard files of a results folder, and the check that they are current.

``write_all`` renders ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard.html`` into the
results folder (atomically); ``stale`` re-renders them in memory and names the files that differ,
which CI uses to fail when ``results/`` and its committed leaderboards disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eqbench.atomic import write_text
from eqbench.results.html import to_html
from eqbench.results.leaderboard import to_csv, to_markdown

RENDERERS: dict[str, Callable[[Path], str]] = {
    "leaderboard.md": to_markdown,
    "leaderboard.csv": to_csv,
    "leaderboard.html": to_html,
}


def render_all(results_dir: Path) -> dict[str, str]:
    """File name → content, from the result JSONs alone."""
    return {name: render(results_dir) for name, render in RENDERERS.items()}


def write_all(results_dir: Path) -> list[Path]:
    """Write every leaderboard file into ``results_dir``; returns their paths."""
    paths = []
    for name, text in render_all(results_dir).items():
        write_text(results_dir / name, text)
        paths.append(results_dir / name)
    return paths


def stale(results_dir: Path) -> list[str]:
    """Names of the leaderboard files that are missing or differ from a fresh rendering."""
    out = []
    for name, text in render_all(results_dir).items():
        path = results_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out
