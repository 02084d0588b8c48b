"""Science check of TIR at the demo budget: does TIR+VICReg keep more transformation information
than VICReg, and than the matched control (same rotated second view, no reconstruction)?

For each seed, pretrains every model with the same steps and data (the `eqbench demo` recipe),
evaluates the `synthetic` group and kNN, and prints per seed and on average:
mean synthetic R² (MLP and linear probes, over the six regression tasks), the mean over the four
tasks of Wang et al.'s Table 1 (rotation, colour, blur, translation; MLP), rotation R²,
four-fold-rotation accuracy and kNN top-1.
Runs are reused when the output folder already holds them. Probes use the task files' sizes (10k
training / 2k test pairs), about 12 minutes per model on two CPU cores.

Usage: python benchmarks/tir_science.py [--seeds 0,1,2] [--steps 200] [--feature avgpool]
       [--models vicreg,tir+vicreg,tir+vicreg-control] [--n-train 10000] [--n-test 2000]
       [--out runs/science] [--report-only]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from eqbench.allocator import keep_freed_memory
from eqbench.demo import DemoConfig, results_dir, run_demo
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
COLUMNS = (
    "mean R² mlp",
    "mean R² linear",
    "Table-1 mean",
    "rotation R²",
    "rotation4 acc",
    "kNN top-1",
)


def scores(folder: Path) -> dict[str, dict[str, float]]:
    """model id → the benchmark's columns, from the newest result of each task."""
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
        if any(f"{t}:mlp" not in v for t in R2_TASKS):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--models", default="vicreg,tir+vicreg,tir+vicreg-control")
    parser.add_argument("--feature", default="avgpool", choices=["avgpool", "cls", "cls+avgpool"])
    # the probes' protocol sizes (tasks/synthetic/_probe.yaml); the demo's 1000/500 pairs are
    # quick but let the MLP probe overfit, which buries a difference of a few R² points
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/science"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="print the table from the results already in --out (no pretraining or evaluation)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does (eqbench.allocator)

    models = tuple(m.strip() for m in args.models.split(","))
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = DemoConfig(
            out=args.out,
            models=models,
            steps=args.steps,
            seed=seed,
            n_train=args.n_train,
            n_test=args.n_test,
            cache_dir=default_cache_dir(),
            results=args.out / f"results-{args.feature}-n{args.n_train}",
            feature=args.feature,
            show_progress=False,
        )
        if not args.report_only:
            start = time.perf_counter()
            run_demo(cfg, announce=lambda msg, s=seed: print(f"seed {s}: {msg}", flush=True))
            print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
        folder = results_dir(cfg)
        found = scores(folder) if folder.is_dir() else {}
        for model in models:
            model_id = f"{model}:{args.steps}steps:seed{seed}"
            if model_id in found:
                rows[model].append({"seed": seed, **found[model_id]})

    print(f"\nsteps={args.steps} feature={args.feature} n_train={args.n_train}")
    print(f"{'model':<22} {'seed':>4} " + " ".join(f"{c:>15}" for c in COLUMNS))
    for model, per_seed in rows.items():
        for row in per_seed:
            print(f"{model:<22} {row['seed']:>4} " + " ".join(f"{row[c]:>15.3f}" for c in COLUMNS))
    print()
    for model, per_seed in rows.items():
        cells = []
        for c in COLUMNS:
            vals = np.array([r[c] for r in per_seed])
            cells.append(f"{vals.mean():>8.3f} ± {vals.std():.3f}")
        print(
            f"{model:<22} mean "
            + " ".join(f"{c:>15}" for c in cells)
            + f"  ({len(per_seed)} seeds)"
        )


if __name__ == "__main__":
    main()
