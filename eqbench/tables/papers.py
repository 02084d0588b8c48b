"""The seed papers' tables, with eqbench's reproduced values beside the published ones.

Published numbers are the CSVs in ``eqbench/tables/data`` (as printed in the papers; source and
caveats in each file's first comment line). Each table names, per column, the eqbench task (and
dataset) that reproduces it; columns no eqbench task measures are marked as such. Reproduced rows
come from ``results/``: one row per model that has at least one of the table's tasks, the newest
result per (model, task, dataset), the primary metric (mean over probe seeds) in the paper's units.

Papers: ``wang2026`` (Wang et al., AAAI-26, arXiv 2503.18753) and ``gtsa`` (Kim, arXiv 2304.08014,
README of bok3948/GTSA).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqbench.errors import ConfigError
from eqbench.registry import did_you_mean
from eqbench.results.records import load_results

DATA = Path(__file__).resolve().parent / "data"
MISSING = "—"
NOT_A_TASK = "n/a"


@dataclass(frozen=True)
class Column:
    """How eqbench reproduces one published column.

    Attributes:
        task: the eqbench task (``None``: no eqbench task measures it).
        dataset: dataset name the result must be on (``None``: the task's default).
        scale: multiply eqbench's stored value by this (100 for percentages).
        note: shown where there is no task, or to qualify one.
        metric: the result's metric to show (``None``: the task's primary metric).
    """

    task: str | None
    dataset: str | None = None
    scale: float = 1.0
    note: str = ""
    metric: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """One published table."""

    paper: str
    number: str
    file: str
    caption: str
    labels: tuple[str, ...]
    columns: dict[str, Column]
    means: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _r2(task: str) -> Column:
    return Column(f"synthetic/{task}")


def _pct(task: str, dataset: str | None, note: str = "") -> Column:
    return Column(task, dataset, 100.0, note)


def _mm(metric: str) -> Column:
    """A COCO AP of mmdet's Mask R-CNN (``detection/maskrcnn_mmdet``), in percent."""
    return Column("detection/maskrcnn_mmdet", "coco", 100.0, metric=metric)


# The paper does not name its linear protocol; these follow dinov2's split of the same datasets:
# logistic regression on the small transfer sets, the SGD head grid on iNat and ImageNet.
_LOGREG = "L-BFGS logistic regression; classification/linear_sgd is the SGD variant"
_SGD = "dinov2 eval/linear.py head grid; classification/linear is the L-BFGS variant"


_NONE = Column(None, note="no eqbench task")
#: Which depth head the paper's Table 6 trains is not recorded with its numbers (dinov2 reports
#: lin. 1, lin. 4 and DPT); the linear head is the columns' task, depth/dpt the heavier variant.
_HEAD = "; the paper's head is not recorded, depth/dpt is the DPT variant"
_SYNTH4 = ("rotation", "colour", "blur", "translation")

TABLES: dict[tuple[str, str], TableSpec] = {
    ("wang2026", "1"): TableSpec(
        "wang2026",
        "1",
        "wang2026_table1_synthetic_r2.csv",
        "R² on synthetic transform-prediction tasks, ViT-S/16 (VICReg-based)",
        ("method",),
        {c: _r2(c) for c in _SYNTH4} | {"mean": Column("mean of the four")},
        {"mean": _SYNTH4},
    ),
    ("wang2026", "3"): TableSpec(
        "wang2026",
        "3",
        "wang2026_table3_runtime.csv",
        "Runtime per epoch on ImageNet-1k (s/epoch)",
        ("config", "backbone"),
        {
            "seconds_per_epoch": Column(None, note="benchmarks/pretrain_throughput.py"),
            "overhead_pct": Column(None, note="benchmarks/pretrain_throughput.py"),
        },
    ),
    ("wang2026", "4"): TableSpec(
        "wang2026",
        "4",
        "wang2026_table4_synthetic_vitl.csv",
        "R² on rotation and colour prediction, ViT-L/16",
        ("method",),
        {"rotation": _r2("rotation"), "colour": _r2("colour"), "mean": Column("mean of the two")},
        {"mean": ("rotation", "colour")},
    ),
    ("wang2026", "5"): TableSpec(
        "wang2026",
        "5",
        "wang2026_table5_linear.csv",
        "Linear probing top-1 (%)",
        ("method",),
        {
            "cifar10": _pct("classification/linear", "cifar10", _LOGREG),
            "cifar100": _pct("classification/linear", "cifar100", _LOGREG),
            "aircraft": _pct("classification/linear", "aircraft", _LOGREG),
            "pet": _pct("classification/linear", "pets", _LOGREG),
            "food": _pct("classification/linear", "food101", _LOGREG),
            "flowers": _pct("classification/linear", "flowers102", _LOGREG),
            "inat18": _pct("classification/linear_sgd", "inat2018", _SGD),
            "imagenet": _pct("classification/linear_sgd", "imagenet", _SGD),
        },
    ),
    ("wang2026", "6"): TableSpec(
        "wang2026",
        "6",
        "wang2026_table6_dense.csv",
        "Dense transfer (ADE20K mIoU %, COCO AP and MPII PCKh fractions, S-COCO corner error px)",
        ("method",),
        {
            "ade20k_miou": _pct("segmentation/upernet", "ade20k"),
            "coco_apb": Column("detection/maskrcnn", "coco"),
            "coco_apm": Column("detection/maskrcnn", "coco", note="mask AP", metric="mask_ap"),
            "coco_map": _NONE,
            "mpii_pckh": Column("pose/mpii", "mpii", note="PCKh@0.5"),
            "scoco_mce": Column("dense/homography"),
            "nyu_rmse": Column("depth/linear", "nyu", note=f"RMSE (m){_HEAD}"),
            "nyu_absrel": Column("depth/linear", "nyu", note=f"AbsRel{_HEAD}", metric="abs_rel"),
            "kitti_rmse": Column("depth/linear", "kitti", note=f"RMSE (m){_HEAD}"),
            "kitti_absrel": Column(
                "depth/linear", "kitti", note=f"AbsRel{_HEAD}", metric="abs_rel"
            ),
        },
    ),
    ("wang2026", "7"): TableSpec(
        "wang2026",
        "7",
        "wang2026_table7_video.csv",
        "Video label propagation",
        ("method",),
        {
            "davis17_jf": Column("video/davis", "davis", 100.0, "J&F mean"),
            "davis17_j": Column("video/davis", "davis", 100.0, "J mean", metric="j"),
            "davis17_f": Column("video/davis", "davis", 100.0, "F mean", metric="f"),
            "vip_miou": Column("video/vip", "vip", 100.0, "mIoU over 20 parts"),
        },
    ),
    ("wang2026", "8"): TableSpec(
        "wang2026",
        "8",
        "wang2026_table8_invariance.csv",
        "Linear probing top-1 (%) against other methods",
        ("method", "pretrain", "arch"),
        {
            "cifar100": _pct("classification/linear", "cifar100", _LOGREG),
            "inat18": _pct("classification/linear_sgd", "inat2018", _SGD),
            "imagenet": _pct("classification/linear_sgd", "imagenet", _SGD),
        },
    ),
    ("wang2026", "9"): TableSpec(
        "wang2026",
        "9",
        "wang2026_table9_num_images.csv",
        "R² by number of reconstructed in-between images",
        ("images",),
        {c: _r2(c) for c in _SYNTH4},
    ),
    ("gtsa", "1"): TableSpec(
        "gtsa",
        "1",
        "gtsa_readme_results.csv",
        "GTSA README: ViT-S/16 pretrained 100 epochs on COCO; iNat19, COCO Mask R-CNN, ADE20K FPN",
        ("method",),
        {
            "inat19_top1": _pct("classification/finetune_inat2019", "inat2019"),
            "inat19_top5": Column(
                "classification/finetune_inat2019", "inat2019", 100.0, metric="top5"
            ),
            # GTSA trains mmdet's Mask R-CNN 1x and mmseg's Semantic FPN: the OpenMMLab tasks.
            "coco_apb": _mm("bbox_map"),
            "coco_apb50": _mm("bbox_map_50"),
            "coco_apb75": _mm("bbox_map_75"),
            "coco_apm": _mm("segm_map"),
            "coco_apm50": _mm("segm_map_50"),
            "coco_apm75": _mm("segm_map_75"),
            "ade20k_aacc": Column("segmentation/semfpn", "ade20k", 100.0, metric="aacc"),
            "ade20k_miou": _pct("segmentation/semfpn", "ade20k"),
            "ade20k_macc": Column("segmentation/semfpn", "ade20k", 100.0, metric="macc"),
        },
    ),
}


def table_spec(paper: str, number: str) -> TableSpec:
    """The spec of a table, with did-you-mean on unknown papers or numbers."""
    papers = sorted({p for p, _ in TABLES})
    if paper not in papers:
        raise ConfigError(
            f"Unknown paper '{paper}'.{did_you_mean(paper, papers)} Papers: {papers}."
        )
    numbers = sorted(n for p, n in TABLES if p == paper)
    if (paper, number) not in TABLES:
        raise ConfigError(f"Paper '{paper}' has no table {number}; tables: {', '.join(numbers)}.")
    return TABLES[(paper, number)]


def published(spec: TableSpec) -> tuple[str, list[dict[str, str]]]:
    """``(source comment, rows)`` of the published CSV."""
    lines = (DATA / spec.file).read_text(encoding="utf-8").splitlines()
    comment = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
    body = [line for line in lines if not line.startswith("#")]
    return comment, list(csv.DictReader(io.StringIO("\n".join(body))))


def _dataset_name(dataset: str) -> str:
    return dataset.split(":", 1)[0]


def reproduced(spec: TableSpec, results_dir: Path) -> list[dict[str, Any]]:
    """One row per model in ``results_dir`` with at least one of the table's tasks."""
    wanted = {c.task for c in spec.columns.values() if c.task and "/" in c.task}
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}
    if results_dir.exists():
        records = sorted(load_results(results_dir), key=lambda r: r.get("created_at", ""))
        for r in records:
            if r["task"] in wanted:
                newest[(r["model_id"], r["task"], _dataset_name(r["dataset"]))] = r
    models = sorted({m for m, _, _ in newest})
    rows = []
    for model in models:
        overrides = sorted(
            {
                f"{k}={v}"
                for (m, _, _), r in newest.items()
                if m == model
                for k, v in (r.get("overrides") or {}).items()
            }
        )
        label = f"{model} {{{','.join(overrides)}}}" if overrides else model
        row: dict[str, Any] = {"model": label}
        for name, col in spec.columns.items():
            if col.task is None or "/" not in col.task:
                continue
            match = [
                r
                for (m, t, d), r in newest.items()
                if m == model and t == col.task and (col.dataset is None or d == col.dataset)
            ]
            metric = col.metric or (match[-1]["primary_metric"] if match else "")
            if match and metric in match[-1]["metrics"]:
                row[name] = float(match[-1]["metrics"][metric]["mean"]) * col.scale
        for name, parts in spec.means.items():
            values = [row.get(p) for p in parts]
            if all(isinstance(v, float) for v in values):
                row[name] = sum(values) / len(values)  # type: ignore[arg-type]
        rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.3f}"
    return str(value) if value not in (None, "") else MISSING


def build(paper: str, number: str, results_dir: Path) -> tuple[TableSpec, str, list[list[str]]]:
    """``(spec, source, rows)``: header row first, published rows, then reproduced rows."""
    spec = table_spec(paper, number)
    source, pub = published(spec)
    header = ["source", " / ".join(spec.labels), *spec.columns]
    rows = [header]
    for r in pub:
        label = " / ".join(r.get(k, "") for k in spec.labels)
        rows.append(["published", label, *(_fmt(r.get(c, "")) for c in spec.columns)])
    for r in reproduced(spec, results_dir):
        cells = []
        for name, col in spec.columns.items():
            cells.append(_fmt(r.get(name)) if col.task else NOT_A_TASK)
        rows.append(["eqbench", r["model"], *cells])
    return spec, source, rows


def mapping_lines(spec: TableSpec) -> list[str]:
    """One line per column: which eqbench task reproduces it."""
    out = []
    for name, col in spec.columns.items():
        if col.task is None:
            out.append(f"{name}: {NOT_A_TASK} ({col.note or 'no eqbench task'})")
        else:
            where = f" on {col.dataset}" if col.dataset else ""
            unit = " ×100" if col.scale != 1 else ""
            metric = f" [{col.metric}]" if col.metric else ""
            note = f" ({col.note})" if col.note else ""
            out.append(f"{name}: {col.task}{where}{metric}{unit}{note}")
    return out


def render(paper: str, number: str, results_dir: Path, fmt: str = "md") -> str:
    """The table as Markdown, LaTeX or CSV."""
    spec, source, rows = build(paper, number, results_dir)
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue()
    if fmt == "md":
        title = f"**{paper} Table {number}**: {spec.caption}. Source: {source}"
        lines = [title, "", "| " + " | ".join(rows[0]) + " |"]
        lines.append("|" + "|".join("---" for _ in rows[0]) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        lines += ["", "Columns reproduced by:", *(f"- {m}" for m in mapping_lines(spec))]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        esc = str.maketrans({"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "²": r"$^2$"})
        cols = "l" * 2 + "r" * (len(rows[0]) - 2)
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule"]
        lines.append(" & ".join(c.translate(esc) for c in rows[0]) + r" \\")
        lines.append(r"\midrule")
        for i, r in enumerate(rows[1:], 1):
            if i > 1 and r[0] != rows[i - 1][0]:
                lines.append(r"\midrule")
            lines.append(" & ".join(c.translate(esc) for c in r) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines.append(rf"\caption{{{paper} Table {number}: {spec.caption.translate(esc)}}}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"
    raise ConfigError(f"Unknown table format '{fmt}'; use md, latex or csv.")
