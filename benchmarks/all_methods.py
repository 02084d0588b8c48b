"""Pretrain every registered method at the CPU budget and evaluate it on the demo's tasks.

Each method is pretrained with its shipped ``<name>_photos_cpu`` config (ViT-Ti/16 at 64 px on the
built-in photos) at the same steps and seed, exactly as ``benchmarks/baselines_science.py`` does
(runs are shared and reused), then evaluated on ``synthetic`` and ``classification/knn`` with the
demo's probe sizes, each through the feature its losses trained (``feature=auto``). The results
land in ``--results-dir``; ``eqbench leaderboard --results-dir DIR`` lists every method side by
side.

Usage: python benchmarks/all_methods.py [--steps 200] [--seed 0] [--out runs/baselines]
       [--results-dir results] [--methods simclr,vicreg,...] [--n-train 1000] [--n-test 500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from baselines_science import checkpoint

from eqbench.allocator import keep_freed_memory
from eqbench.features.store import default_cache_dir
from eqbench.methods import METHODS
from eqbench.protocols.run import EvalConfig, evaluate
from eqbench.results.records import load_results

TASKS = "synthetic,classification/knn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/baselines"))
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--methods", default=",".join(METHODS.names()))
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does (eqbench.allocator)

    for method in (m.strip() for m in args.methods.split(",")):
        ckpt = checkpoint(method, args)
        model_id = f"{method}:{args.steps}steps:seed{args.seed}"
        done = args.results_dir.exists() and any(
            r["model_id"] == model_id and r["task"] == "classification/knn"
            for r in load_results(args.results_dir)
        )
        if done:
            print(f"{method}: results present, skipped", flush=True)
            continue
        start = time.perf_counter()
        evaluate(
            EvalConfig(
                tasks=TASKS,
                checkpoint=str(ckpt),
                seed=args.seed,
                results_dir=args.results_dir,
                cache_dir=default_cache_dir(),
                overrides={"n_train": args.n_train, "n_test": args.n_test, "feature": "auto"},
                show_progress=False,
            )
        )
        print(f"{method}: evaluated in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
