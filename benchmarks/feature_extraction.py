"""Feature-extraction throughput and the wall time of the `synthetic` group.

Prints:
1. images/s of eqbench's feature extraction (data → views → encoder → pooled features, through
   :class:`FeatureStore`) against a bare forward of the same backbone at the same batch size on
   the same views made beforehand (target: ratio ≥ 0.9), best of ``--repeats`` alternating runs
   of each, with and without the background-thread prefetch, and the median of paired runs;
2. wall time of `eqbench eval --task synthetic` with a cold and a warm feature cache.

Usage: python benchmarks/feature_extraction.py [--arch vit_tiny_patch16_224] [--size 64]
       [--n 2048] [--batch-size 256] [--repeats 3] [--skip-group] [--group-set n_train=2000 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from eqbench.backbones import create_encoder
from eqbench.data import load_dataset
from eqbench.features.store import FeatureStore
from eqbench.protocols.views import view_batches, view_key


def ready_batches(n: int, size: int, batch: int) -> list[torch.Tensor]:
    """The views extraction encodes, made beforehand and held in memory."""
    dataset = load_dataset("photos", "train", n=n, seed=1)
    make = view_batches(dataset, size, 2 * size)
    return [make(list(range(lo, min(lo + batch, n)))) for lo in range(0, n, batch)]


def bare_forward(encoder: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    """images/s of the encoder alone on ready-made batches (no data work, no bookkeeping)."""
    with torch.inference_mode():
        encoder(batches[0])  # warm-up
        start = time.perf_counter()
        for x in batches:
            encoder(x)
    return sum(len(x) for x in batches) / (time.perf_counter() - start)


def extraction(
    encoder: torch.nn.Module, n: int, size: int, batch: int, prefetch: bool = False
) -> float:
    dataset = load_dataset("photos", "train", n=n, seed=0)
    store = FeatureStore(
        encoder, "bench", torch.device("cpu"), None, batch, show_progress=False, prefetch=prefetch
    )
    store.get(dataset, {"warm": 1}, view_batches(dataset, size, 2 * size))  # warm-up + photo decode
    dataset = load_dataset("photos", "train", n=n, seed=1)
    start = time.perf_counter()
    store.get(dataset, view_key(size, 2 * size, None, 1), view_batches(dataset, size, 2 * size))
    return n / (time.perf_counter() - start)


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def group_wall_time(checkpoint: str, sets: list[str]) -> tuple[float, float]:
    from eqbench.config import parse_overrides
    from eqbench.evaluate import EvalConfig, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in ("cold", "warm"):
            cfg = EvalConfig(
                tasks="synthetic",
                checkpoint=checkpoint,
                results_dir=Path(tmp) / "results",
                cache_dir=Path(tmp) / "cache",
                overrides=parse_overrides(sets),
                show_progress=False,
            )
            start = time.perf_counter()
            evaluate(cfg)
            times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="vit_tiny_patch16_224")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-group", action="store_true")
    parser.add_argument("--group-set", nargs="*", default=[])
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = create_encoder(args.arch, img_size=args.size).eval()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.arch} at {args.size}px, batch {args.batch_size}"
    )
    # alternate the two measurements and keep the best of each, so that a burst of load from
    # elsewhere on the machine does not decide the ratio
    batches = ready_batches(args.n, args.size, args.batch_size)
    bares, ours_all, threaded = [], [], []
    for _ in range(args.repeats):
        bares.append(bare_forward(encoder, batches))
        ours_all.append(extraction(encoder, args.n, args.size, args.batch_size))
        threaded.append(extraction(encoder, args.n, args.size, args.batch_size, prefetch=True))
    bare, ours, ours_t = max(bares), max(ours_all), max(threaded)
    paired = sorted(o / b for o, b in zip(ours_all, bares, strict=True))
    print(f"bare forward:        {bare:8.1f} images/s  (runs: {_fmt(bares)})")
    print(f"eqbench extraction:  {ours:8.1f} images/s  (runs: {_fmt(ours_all)})")
    print(f"  with prefetch:     {ours_t:8.1f} images/s  (runs: {_fmt(threaded)})")
    print(f"ratio (best of each): {ours / bare:.2f}  (target >= 0.90)")
    print(f"  with prefetch:      {ours_t / bare:.2f}")
    print(f"ratio (median of paired runs): {paired[len(paired) // 2]:.2f}")
    if not args.skip_group:
        for ckpt in ("baseline:pixels", f"baseline:random:{args.arch}"):
            cold, warm = group_wall_time(ckpt, args.group_set)
            print(f"synthetic group, {ckpt}: cold cache {cold:6.1f}s, warm cache {warm:6.1f}s")


if __name__ == "__main__":
    main()
