"""A self-contained HTML leaderboard with plots, generated deterministically from ``results/``.

The page holds the leaderboard table, the equivariance–invariance map (mean synthetic R² against
kNN top-1, one point per model) and per-transformation R² bars. Plots are matplotlib SVGs
inlined in the page (no scripts, no network); the SVG hash salt and metadata are fixed, so the
same results always give the same bytes (``eqbench leaderboard --check`` relies on it).
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import pandas as pd

from eqbench.results.leaderboard import column_units, formatted, leaderboard

SUMMARY = "mean R² (synthetic)"
KNN = "classification/knn"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
figure { display: inline-block; margin: 1rem 1rem 1rem 0; }
figcaption { font-size: 0.85rem; color: #555; max-width: 36rem; }
"""


def _svg(fig: object) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _column(means: pd.DataFrame, prefix: str) -> str | None:
    return next((c for c in means.columns if c == prefix or c.startswith(prefix + " ")), None)


def map_plot(means: pd.DataFrame) -> str | None:
    """Mean synthetic R² (equivariance) against kNN top-1 (invariance), one point per model."""
    knn = _column(means, KNN)
    if SUMMARY not in means.columns or knn is None:
        return None
    points = means[[knn, SUMMARY]].dropna()
    if points.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.hashsalt": "eqbench", "svg.fonttype": "none"}):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.scatter(100 * points[knn], points[SUMMARY], color="#1f77b4")
        for model, row in points.iterrows():
            ax.annotate(
                str(model),
                (100 * row[knn], row[SUMMARY]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.set_xlabel("kNN top-1 (%) — invariance")
        ax.set_ylabel("mean synthetic R² — equivariance")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return _svg(fig)


def bars_plot(means: pd.DataFrame, units: dict[str, str]) -> str | None:
    """R² per synthetic transformation, one bar group per transformation."""
    cols = [c for c in means.columns if c.startswith("synthetic/") and units.get(c) == "r2"]
    if not cols:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = means[cols]
    n = len(data.index)
    width = 0.8 / max(n, 1)
    with matplotlib.rc_context({"svg.hashsalt": "eqbench", "svg.fonttype": "none"}):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols)), 4.5))
        for i, (model, row) in enumerate(data.iterrows()):
            xs = [j + (i - (n - 1) / 2) * width for j in range(len(cols))]
            ax.bar(xs, row.fillna(0).tolist(), width=width, label=str(model))
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([c.split(" ")[0].removeprefix("synthetic/") for c in cols], fontsize=8)
        ax.axhline(0, color="#444", linewidth=0.8)
        ax.set_ylabel("R² (MLP probe)")
        ax.legend(fontsize=7, loc="best")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _svg(fig)


def to_html(results_dir: Path, title: str = "eqbench leaderboard") -> str:
    """The whole page as a string (same results → same bytes)."""
    table = formatted(results_dir)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if table.empty:
        parts.append("<p>No results yet. Run <code>eqbench eval</code> first.</p></body></html>")
        return "\n".join(parts) + "\n"
    means, _, _ = leaderboard(results_dir)
    units = column_units(results_dir)
    parts.append(
        f"<p>{len(table.index)} models, {len(table.columns)} columns; generated from "
        f"<code>{html.escape(results_dir.name)}/</code> by <code>eqbench leaderboard</code>. "
        "Percentages for accuracies, R² as is; ± is the std over probe or data seeds.</p>"
    )
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["model", *table.columns])
    rows = []
    for model, row in table.iterrows():
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row.tolist())
        rows.append(
            f'<tr data-model="{html.escape(str(model))}"><td>{html.escape(str(model))}'
            f"</td>{cells}</tr>"
        )
    parts.append(f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>')
    parts += rows
    parts.append("</tbody></table>")
    for svg, caption in (
        (map_plot(means), "The equivariance–invariance map: mean synthetic R² against kNN top-1."),
        (bars_plot(means, units), "R² of the MLP probe per synthetic transformation."),
    ):
        if svg:
            parts.append(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
