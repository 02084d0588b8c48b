"""Sanity of the equivariant baselines at the CPU budget: does each beat its invariant base on the
transformation it was built to keep?

Checks (issue "Equivariant and reconstruction baselines"):
  essl    vs simclr   on synthetic/rotation4  (E-SSL predicts four-fold rotation)
  augself vs simclr   on synthetic/colour     (AugSelf predicts augmentation differences)
  sie     vs vicreg   on synthetic/rotation   (SIE trained on rotation)
  gtsa    vs dino     on synthetic/rotation4  (GTSA predicts each crop's four-fold rotation; its
                                               invariant base: DINO-style EMA teacher with
                                               multi-crop, the baseline the GTSA paper compares to)
Each model is pretrained with its shipped ``<name>_photos_cpu`` config at the same steps and seed,
then evaluated on the task with the demo's probe sizes. Runs and results are reused when present.

Usage: python benchmarks/baselines_science.py [--steps 200] [--seed 0] [--out runs/baselines]
       [--n-train 1000] [--n-test 500] [--checks essl,augself,sie,gtsa]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from eqbench.allocator import keep_freed_memory
from eqbench.demo import DEMO_MODELS
from eqbench.features.store import default_cache_dir
from eqbench.protocols.run import EvalConfig, evaluate
from eqbench.results.records import load_results
from eqbench.train import load_pretrain_config, pretrain

CHECKS = {
    "essl": ("simclr", "synthetic/rotation4"),
    "augself": ("simclr", "synthetic/colour"),
    "sie": ("vicreg", "synthetic/rotation"),
    "gtsa": ("dino", "synthetic/rotation4"),
}


def checkpoint(method: str, args: argparse.Namespace) -> Path:
    """Pretrain (or reuse) ``method`` at ``args.steps``: a registered method with its shipped
    ``<name>_photos_cpu`` config, or a demo model (e.g. ``tir+vicreg-control``) with its config and
    overrides (:data:`eqbench.demo.DEMO_MODELS`)."""
    out = args.out / "runs" / f"{method}_seed{args.seed}"
    config, extra = DEMO_MODELS.get(method, (f"{method.replace('+', '_')}_photos_cpu", {}))
    cfg = load_pretrain_config(
        config,
        {
            **extra,
            "steps": args.steps,
            "warmup_steps": max(1, min(25, args.steps // 10)),
            "checkpoint_every": max(1, args.steps // 4),
            "seed": args.seed,
            "name": f"{method}:{args.steps}steps:seed{args.seed}",
        },
    )
    start = time.perf_counter()
    path = pretrain(cfg, out, resume=(out / "checkpoint.pt").is_file())
    print(f"pretrained {method} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def score(method: str, task: str, ckpt: Path, args: argparse.Namespace) -> tuple[str, float]:
    results = args.out / "results"
    model_id = f"{method}:{args.steps}steps:seed{args.seed}"
    found = (
        [r for r in load_results(results) if r["model_id"] == model_id and r["task"] == task]
        if results.exists()
        else []
    )
    if not found:
        evaluate(
            EvalConfig(
                tasks=task,
                checkpoint=str(ckpt),
                seed=args.seed,
                results_dir=results,
                cache_dir=default_cache_dir(),
                # each model is read through the feature its losses trained (CLS for DINO,
                # the mean patch token for the others)
                overrides={"n_train": args.n_train, "n_test": args.n_test, "feature": "auto"},
                show_progress=False,
            )
        )
        found = [
            r for r in load_results(results) if r["model_id"] == model_id and r["task"] == task
        ]
    r = found[-1]
    metric = r["primary_metric"]
    return metric, float(r["metrics"][metric]["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/baselines"))
    parser.add_argument("--checks", default=",".join(CHECKS))
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does (eqbench.allocator)

    rows = []
    ckpts: dict[str, Path] = {}
    for method in (m.strip() for m in args.checks.split(",")):
        base, task = CHECKS[method]
        for name in (base, method):
            if name not in ckpts:
                ckpts[name] = checkpoint(name, args)
        metric, ours = score(method, task, ckpts[method], args)
        _, theirs = score(base, task, ckpts[base], args)
        rows.append((method, base, task, metric, ours, theirs))

    print(f"\nsteps={args.steps} seed={args.seed} n_train={args.n_train}")
    print(f"{'method':<9} {'base':<8} {'task':<22} {'metric':<8} {'method':>8} {'base':>8}  holds")
    for method, base, task, metric, ours, theirs in rows:
        print(
            f"{method:<9} {base:<8} {task:<22} {metric:<8} {ours:>8.3f} {theirs:>8.3f}  "
            f"{'yes' if ours > theirs else 'NO'}"
        )


if __name__ == "__main__":
    main()
