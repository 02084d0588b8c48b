"""Leaderboards generated from ``results/`` with pandas.

One row per model, one column per (task, version, dataset, overrides); a column never mixes task
versions. For each cell the newest result per data seed is kept; the cell shows the mean of the
primary metric and its std (over probe seeds for one data seed, over data seeds otherwise).

Features: tasks read ``feature: auto`` by default, so models in one column may read different
global features (the CLS token of a DINO checkpoint, the mean patch token of a VICReg one). A cell
never mixes features: when one model has results with two features in a column, the column splits
by feature; when the models of a column read different features, each cell names its feature
(``48.1 (avgpool)``) and the CSV has a ``feature`` field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from eqbench.protocols.base import metric_higher_is_better, metric_unit
from eqbench.results.records import load_results
from eqbench.tasks import all_tasks

#: Appended to the column of a task whose primary metric is lower-is-better.
LOWER_IS_BETTER_MARK = " ↓"


def _column(row: dict[str, Any], default_datasets: dict[str, str]) -> str:
    label = row["task"]
    if row["n_versions"] > 1:
        label += f" v{row['task_version']}"
    if row["n_datasets"] > 1 or row["dataset"] != default_datasets.get(row["task"], row["dataset"]):
        label += f" [{row['dataset']}]"
    if row["overrides"]:
        label += " {" + ",".join(f"{k}={v}" for k, v in sorted(row["overrides"].items())) + "}"
    if not row["higher_is_better"]:
        label += LOWER_IS_BETTER_MARK
    return label


def record_protocol(record: dict[str, Any]) -> str:
    """The protocol that wrote ``record``; for a record that does not name it, the protocol of its
    task's file (empty when the task is gone too)."""
    if record.get("protocol"):
        return str(record["protocol"])
    spec = all_tasks().get(record["task"])
    return spec.protocol if spec is not None else ""


def record_higher_is_better(record: dict[str, Any]) -> bool:
    """Whether ``record``'s primary metric is higher-is-better: as the record states it, else as
    its protocol declares it, else higher."""
    if "higher_is_better" in record:
        return bool(record["higher_is_better"])
    declared = metric_higher_is_better(record_protocol(record), record["primary_metric"])
    return True if declared is None else declared


def results_frame(results_dir: Path) -> pd.DataFrame:
    """One row per result file with the fields the leaderboard needs; units and directions are
    the protocols' declarations (:data:`eqbench.protocols.base.UNITS`), never read off names."""
    rows = []
    for r in load_results(results_dir):
        primary = r["metrics"][r["primary_metric"]]
        protocol = record_protocol(r)
        rows.append(
            {
                "model": r["model_id"],
                "task": r["task"],
                "task_version": r["task_version"],
                "dataset": r["dataset"],
                "overrides": r.get("overrides", {}),
                "overrides_key": json.dumps(r.get("overrides", {}), sort_keys=True),
                "feature": str(r.get("config", {}).get("feature", "")),
                "seed": r["seed"],
                "metric": r["primary_metric"],
                "unit": metric_unit(protocol, r["primary_metric"]),
                "higher_is_better": record_higher_is_better(r),
                "mean": primary["mean"],
                "std": primary["std"],
                "created_at": r.get("created_at", ""),
            }
        )
    return pd.DataFrame(rows)


def _cells(results_dir: Path) -> pd.DataFrame:
    """One row per (model, column): the aggregated primary metric, its std, metric name and the
    feature the cell read (empty for tasks that read no global feature)."""
    df = results_frame(results_dir)
    if df.empty:
        return df
    key = ["model", "task", "task_version", "dataset", "overrides_key", "feature"]
    # newest result per (cell, data seed)
    df = df.sort_values("created_at").groupby([*key, "seed"], as_index=False).last()
    cells = (
        df.groupby(key)
        .agg(
            mean=("mean", "mean"),
            std_seeds=("mean", "std"),
            std_probe=("std", "first"),
            n_seeds=("seed", "nunique"),
            metric=("metric", "first"),
            unit=("unit", "first"),
            overrides=("overrides", "first"),
            higher_is_better=("higher_is_better", "first"),
        )
        .reset_index()
    )
    cells["std"] = cells["std_seeds"].where(cells["n_seeds"] > 1, cells["std_probe"])
    cells["n_versions"] = cells.groupby("task")["task_version"].transform("nunique")
    cells["n_datasets"] = cells.groupby("task")["dataset"].transform("nunique")
    defaults = {t: g["dataset"].mode().iloc[0] for t, g in cells.groupby("task")}
    cells["column"] = [_column(row, defaults) for row in cells.to_dict("records")]
    # a model with two features in one column: that column splits by feature
    per_model = cells.groupby(["column", "model"])["feature"].transform("nunique")
    split = set(cells.loc[per_model > 1, "column"])
    cells["column"] = [
        f"{c} {{feature={f}}}" if c in split else c
        for c, f in zip(cells["column"], cells["feature"], strict=True)
    ]
    cells["mixed_features"] = cells.groupby("column")["feature"].transform("nunique") > 1
    return cells


SUMMARY = "mean R² (synthetic)"


def leaderboard(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """``(means, stds, metric_by_column)``: models × columns, plus each column's metric name.

    A ``mean R² (synthetic)`` summary column averages the synthetic R² cells of each model when it
    has all of them.
    """
    cells = _cells(results_dir)
    if cells.empty:
        return pd.DataFrame(), pd.DataFrame(), {}
    means = cells.pivot(index="model", columns="column", values="mean")
    stds = cells.pivot(index="model", columns="column", values="std")
    metrics = dict(zip(cells["column"], cells["metric"], strict=True))
    r2_cols = r2_columns(cells)
    if r2_cols:
        means[SUMMARY] = means[r2_cols].mean(axis=1, skipna=False)
        stds[SUMMARY] = float("nan")
        metrics[SUMMARY] = "r2_mlp"
    order = sorted(means.columns, key=lambda c: (c != SUMMARY, c))
    return means[order].sort_index(), stds[order].sort_index(), metrics


def column_units(results_dir: Path) -> dict[str, str]:
    """Each column's unit, as its protocol declares it (:data:`eqbench.protocols.base.UNITS`)."""
    cells = _cells(results_dir)
    if cells.empty:
        return {}
    units = dict(zip(cells["column"], cells["unit"], strict=True))
    return {**units, SUMMARY: "r2"}


def r2_columns(cells: pd.DataFrame) -> list[str]:
    """The synthetic-probe columns whose primary metric is an R² (the summary column's)."""
    r2 = cells[cells["column"].str.startswith("synthetic/") & (cells["unit"] == "r2")]
    return sorted(set(r2["column"]))


def features_read(results_dir: Path) -> pd.DataFrame:
    """Models × columns: the feature each cell read, where a column's models read different
    ones (empty string elsewhere)."""
    cells = _cells(results_dir)
    if cells.empty:
        return pd.DataFrame()
    shown = cells["feature"].where(cells["mixed_features"], "")
    return cells.assign(shown=shown).pivot(index="model", columns="column", values="shown")


def _named(feature: object) -> bool:
    """Whether a :func:`features_read` cell names a feature (not empty, not missing)."""
    return isinstance(feature, str) and bool(feature)


def format_cell(mean: float, std: float, unit: str) -> str:
    """``61.2 ± 0.4`` for percentages, ``0.734 ± 0.012`` for R² and other units; ``—`` if
    missing. ``unit``: the metric's unit (:func:`eqbench.protocols.base.metric_unit`)."""
    if pd.isna(mean):
        return "—"
    if unit == "percent":
        text = f"{100 * mean:.1f}"
        return text + (f" ± {100 * std:.1f}" if not pd.isna(std) and std > 0 else "")
    text = f"{mean:.3f}"
    return text + (f" ± {std:.3f}" if not pd.isna(std) and std > 0 else "")


def formatted(results_dir: Path) -> pd.DataFrame:
    """The leaderboard as strings (models × columns)."""
    means, stds, _ = leaderboard(results_dir)
    units = column_units(results_dir)
    features = features_read(results_dir)
    out = means.copy().astype(object)
    for col in means.columns:
        shown = features[col] if col in features.columns else None
        out[col] = [
            format_cell(m, s, units[col])
            + (f" ({shown[model]})" if shown is not None and _named(shown.get(model)) else "")
            for model, m, s in zip(means.index, means[col], stds[col], strict=True)
        ]
    return out


def to_markdown(results_dir: Path) -> str:
    """A GitHub-flavoured Markdown table."""
    table = formatted(results_dir)
    if table.empty:
        return "_No results yet._\n"
    cols = ["model", *table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for model, row in table.iterrows():
        lines.append("| " + " | ".join([str(model), *map(str, row.tolist())]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(results_dir: Path) -> str:
    """Machine-readable CSV: one row per (model, column) with mean, std and metric."""
    means, stds, metrics = leaderboard(results_dir)
    if means.empty:
        return "model,column,metric,feature,mean,std\n"
    long = means.stack(future_stack=True).rename("mean").to_frame()
    long["std"] = stds.stack(future_stack=True)
    long = long.reset_index().rename(columns={"level_1": "column"})
    long.columns = ["model", "column", "mean", "std"]
    long["metric"] = long["column"].map(metrics)
    long = long.dropna(subset=["mean"])
    cells = _cells(results_dir)
    keys = zip(cells["model"], cells["column"], strict=True)
    read = dict(zip(keys, cells["feature"], strict=True))
    pairs = zip(long["model"], long["column"], strict=True)
    long["feature"] = [read.get(pair, "") for pair in pairs]
    return str(long[["model", "column", "metric", "feature", "mean", "std"]].to_csv(index=False))
