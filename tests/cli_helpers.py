"""The CLI end-to-end checks the task test modules share: run ``eqbench``, read the one result
an ``eval`` wrote, or check that bad input is refused in one line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from eqbench.cli import main


def run_cli(*args: str) -> tuple[int, str]:
    """``eqbench ARGS``: the exit code and the output."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def eval_args(task: str, checkpoint: str, results_dir: Path, *options: str) -> list[str]:
    """``eval --task TASK --checkpoint CHECKPOINT OPTIONS --results-dir DIR --quiet``."""
    return [
        "eval", "--task", task, "--checkpoint", checkpoint, *options,
        "--results-dir", str(results_dir), "--quiet",
    ]  # fmt: skip


def eval_one_result(task: str, checkpoint: str, results_dir: Path, *options: str) -> dict[str, Any]:
    """Run ``eqbench eval`` of one task; it succeeds and writes exactly one result, returned."""
    code, out = run_cli(*eval_args(task, checkpoint, results_dir, *options))
    assert code == 0, out
    files = list(results_dir.rglob("*.json"))
    assert len(files) == 1, files
    record: dict[str, Any] = json.loads(files[0].read_text())
    assert record["task"] == task
    return record


def assert_refused_in_one_line(
    message: str, task: str, checkpoint: str, results_dir: Path, *options: str
) -> None:
    """``eqbench eval`` fails with one line naming ``message``, no traceback, no result."""
    code, out = run_cli(*eval_args(task, checkpoint, results_dir, *options))
    assert code != 0
    assert message in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert "Traceback" not in out
    assert not results_dir.exists() or not any(results_dir.rglob("*"))
