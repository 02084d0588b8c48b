"""The one progress bar of eqbench's loops (encoding, scoring, propagating)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)


def progress_bar(verb: str, show: bool, *extra: ProgressColumn) -> Progress:
    """A transient rich bar ``<verb> <task description> ━━━ n/N eta`` (plus ``extra`` columns);
    drawn only when ``show``."""
    return Progress(
        TextColumn(f"[bold]{verb}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        *extra,
        disable=not show,
        transient=True,
    )
