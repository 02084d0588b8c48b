"""Science check of TIR at the CPU budget: does reconstruction (TIR) keep more transformation
information than its matched control, and than its base?

Models (``eqbench.demo.DEMO_MODELS``), each pretrained with the same steps, data and seed:

* ``vicreg``: the base (``vicreg_photos_cpu``);
* ``tir+vicreg``: TIR in the paper's SIE-style VICReg configuration, K = 2, λ = 1;
* ``tir+vicreg-control``: the matched control, the same config with λ = 0 (same rotated second
  view, split and recipe, no decoders): any claim that TIR helps rests on TIR − control;
* ``tir+vicreg-k1`` / ``tir+vicreg-k3``: the paper's Table 9 ablation (K = 1, 3);
* ``tir+vicreg-lambda0.1`` / ``tir+vicreg-lambda5``: the reconstruction-weight sweep (λ = 0.1, 5);
* ``rotation_supervised``: the positive control (trained with supervision to predict the rotation
  between two views); the rotation probe must read a high R² from it.

Each model is evaluated on the six synthetic R² tasks, four-fold rotation and kNN at the task files'
probe sizes (10k training / 2k test pairs; one probe seed per pretraining seed, since the seeds of
pretraining carry the variance that matters), once per feature: ``auto`` (the feature the method
trained: the mean patch token here) and ``grid`` (patch tokens pooled to 2×2, flattened). The
feature cache holds both, so the second feature costs the probes only.

Printed per feature: a per-seed table, means ± std over seeds, and paired differences (TIR −
control, TIR − base, K = 1/3 − K = 2 and λ = 0.1/5 − λ = 1) with their standard errors over
seeds. Runs and results are reused when the output folder holds them; ``--report-only`` prints
from what is there.

Usage: python benchmarks/tir_science.py [--seeds 0,1,2,3,4] [--models ...] [--features auto,grid]
       [--steps 200] [--n-train 10000] [--n-test 2000] [--out runs/science] [--report-only]
       [--markdown FILE]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from eqbench.allocator import keep_freed_memory
from eqbench.demo import DEMO_MODELS, DemoConfig, results_dir, run_demo
from eqbench.features.store import default_cache_dir
from eqbench.results.records import load_results

R2_TASKS = (
    "synthetic/rotation",
    "synthetic/colour",
    "synthetic/blur",
    "synthetic/translation",
    "synthetic/se2",
    "synthetic/scale",
)
#: The four tasks whose mean is Wang et al.'s Table 1 "mean" column.
TABLE1_TASKS = R2_TASKS[:4]
TASKS = ",".join([*R2_TASKS, "synthetic/rotation4", "classification/knn"])
COLUMNS = (
    "mean R² mlp",
    "mean R² linear",
    "Table-1 mean",
    "rotation R²",
    "rotation4 acc",
    "kNN top-1",
)
#: Columns with paired differences (the issue's three).
PAIRED = ("mean R² mlp", "rotation R²", "rotation4 acc")
#: ``(a, b)``: report ``a − b`` per seed.
COMPARISONS = (
    ("tir+vicreg", "tir+vicreg-control"),
    ("tir+vicreg", "vicreg"),
    ("tir+vicreg-control", "vicreg"),
    ("tir+vicreg-k1", "tir+vicreg"),
    ("tir+vicreg-k3", "tir+vicreg"),
    ("tir+vicreg-lambda0.1", "tir+vicreg"),
    ("tir+vicreg-lambda5", "tir+vicreg"),
)
MAIN_MODELS = "vicreg,tir+vicreg,tir+vicreg-control,tir+vicreg-k1,tir+vicreg-k3,rotation_supervised"


def scores(folder: Path) -> dict[str, dict[str, float]]:
    """model id → the benchmark's columns, from the newest result of each task (models that miss
    a task are left out)."""
    newest: dict[tuple[str, str], dict] = {}
    for r in sorted(load_results(folder), key=lambda r: r.get("created_at", "")):
        newest[(r["model_id"], r["task"])] = r
    by_model: dict[str, dict[str, float]] = defaultdict(dict)
    for (model, task), r in newest.items():
        m = {k: v["mean"] for k, v in r["metrics"].items()}
        if task in R2_TASKS:
            by_model[model][f"{task}:mlp"] = m["r2_mlp"]
            by_model[model][f"{task}:linear"] = m["r2_linear"]
        elif task == "synthetic/rotation4":
            by_model[model]["rotation4 acc"] = m["acc_mlp"]
        elif task == "classification/knn":
            by_model[model]["kNN top-1"] = m[r["primary_metric"]]
    out = {}
    for model, v in by_model.items():
        if any(f"{t}:mlp" not in v for t in R2_TASKS) or len(v) < 2 * len(R2_TASKS) + 2:
            continue  # still being evaluated
        out[model] = {
            "mean R² mlp": float(np.mean([v[f"{t}:mlp"] for t in R2_TASKS])),
            "mean R² linear": float(np.mean([v[f"{t}:linear"] for t in R2_TASKS])),
            "Table-1 mean": float(np.mean([v[f"{t}:mlp"] for t in TABLE1_TASKS])),
            "rotation R²": v["synthetic/rotation:mlp"],
            "rotation4 acc": v.get("rotation4 acc", float("nan")),
            "kNN top-1": v.get("kNN top-1", float("nan")),
        }
    return out


def paired(
    rows: dict[str, dict[int, dict[str, float]]], a: str, b: str, column: str
) -> tuple[float, float, int, int] | None:
    """``(mean of a − b, its standard error, seeds, seeds with a > b)`` over shared seeds."""
    seeds = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
    if not seeds:
        return None
    diffs = np.array([rows[a][s][column] - rows[b][s][column] for s in seeds])
    se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return float(diffs.mean()), se, len(diffs), int((diffs > 0).sum())


def report(rows: dict[str, dict[int, dict[str, float]]], title: str) -> list[str]:
    """The Markdown tables of one feature: per seed, means, paired differences."""
    lines = [f"### {title}", "", "| model | seed | " + " | ".join(COLUMNS) + " |"]
    lines.append("|---|---|" + "---|" * len(COLUMNS))
    for model, per_seed in rows.items():
        for seed, row in sorted(per_seed.items()):
            lines.append(
                f"| {model} | {seed} | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + " |"
            )
    for model, per_seed in rows.items():
        cells = []
        for c in COLUMNS:
            vals = np.array([r[c] for r in per_seed.values()])
            spread = f" ± {vals.std(ddof=1):.3f}" if len(vals) > 1 else ""  # none from one seed
            cells.append(f"{vals.mean():.3f}{spread}")
        lines.append(f"| **{model}** | mean of {len(per_seed)} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference | " + " | ".join(PAIRED) + " |"]
    lines.append("|---|" + "---|" * len(PAIRED))
    for a, b in COMPARISONS:
        cells = []
        for c in PAIRED:
            d = paired(rows, a, b, c)
            if d is None:
                cells.append("—")
                continue
            mean, se, n, wins = d
            if n < 2:  # one seed has no standard error
                cells.append(f"{mean:+.3f} (1 seed)")
                continue
            ratio = f", {mean / se:+.1f} s.e." if se > 0 else ""
            cells.append(f"{mean:+.3f} ± {se:.3f} ({wins}/{n} seeds > 0{ratio})")
        if any(cell != "—" for cell in cells):
            lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated pretraining seeds")
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps per model")
    parser.add_argument(
        "--models", default=MAIN_MODELS, help="comma-separated demo models (eqbench.demo)"
    )
    parser.add_argument(
        "--features", default="auto,grid", help="global features the probes read, one table each"
    )
    # the probes' protocol sizes (tasks/synthetic/_probe.yaml); the demo's 1000/500 pairs are
    # quick but let the MLP probe overfit, which buries a difference of a few R² points
    parser.add_argument("--n-train", type=int, default=10000, help="probe training pairs")
    parser.add_argument("--n-test", type=int, default=2000, help="probe test pairs")
    parser.add_argument("--probe-seeds", type=int, default=1, help="probe fits averaged per result")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/science"), help="checkpoints and results go here"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="print the tables from the results already in --out (no pretraining or evaluation)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does (eqbench.allocator)

    models = tuple(m.strip() for m in args.models.split(","))
    unknown = [m for m in models if m not in DEMO_MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(DEMO_MODELS)}")
    features = tuple(f.strip() for f in args.features.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    tables: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for feature in features:
        tables[feature] = defaultdict(dict)
    for seed in seeds:
        for feature in features:
            cfg = DemoConfig(
                out=args.out,
                models=models,
                steps=args.steps,
                seed=seed,
                tasks=TASKS,
                n_train=args.n_train,
                n_test=args.n_test,
                cache_dir=default_cache_dir(),
                results=args.out / f"results-{feature}-n{args.n_train}",
                feature=feature,
                eval_overrides={"probe_seeds": args.probe_seeds},
                show_progress=False,
            )
            folder = results_dir(cfg)
            found = scores(folder) if folder.is_dir() else {}
            todo = tuple(m for m in models if f"{m}:{args.steps}steps:seed{seed}" not in found)
            if todo and not args.report_only:  # models with every result are not evaluated again
                start = time.perf_counter()
                cfg.models = todo
                run_demo(cfg, announce=lambda m, s=seed, f=feature: print(f"seed {s} [{f}]: {m}"))
                print(f"seed {seed} [{feature}]: {time.perf_counter() - start:.0f} s", flush=True)
                found = scores(folder)
            for model in models:
                model_id = f"{model}:{args.steps}steps:seed{seed}"
                if model_id in found:
                    tables[feature][model][seed] = found[model_id]

    lines = [
        f"steps={args.steps}, probes on {args.n_train} training / {args.n_test} test pairs, "
        f"{args.probe_seeds} probe seed(s) per pretraining seed",
        "",
    ]
    for feature in features:
        rows = {m: tables[feature][m] for m in models if tables[feature].get(m)}
        lines += report(rows, f"feature = {feature}")
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
