"""Feature-extraction throughput and the wall time of the `synthetic` group.

Prints:
1. images/s of eqbench's feature extraction (data → views → encoder → pooled features, through
   :class:`FeatureStore`) against a bare forward of the same backbone at the same batch size on
   views made beforehand (target: ratio ≥ 0.9), with and without the background-thread prefetch.
   The measurements alternate in short rounds (``--n`` images each, a fresh set of photo crops
   for every extraction round), so the machine's speed, which drifts from second to second on
   shared hardware, weighs on both alike; the ratio is that of the total times over all rounds,
   with the median and range of the per-round ratios beside it (about 3.5 minutes on 2 cores);
2. wall time of `eqbench eval --task synthetic` with a cold and a warm feature cache.

Usage: python benchmarks/feature_extraction.py [--arch vit_tiny_patch16_224] [--size 64]
       [--n 1024] [--batch-size 256] [--rounds 24] [--skip-group] [--group-set n_train=2000 ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from eqbench.allocator import keep_freed_memory
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
    """Seconds the encoder alone takes on ready-made batches (no data work, no bookkeeping)."""
    with torch.inference_mode():
        start = time.perf_counter()
        for x in batches:
            encoder(x)
    return time.perf_counter() - start


def extraction(store: FeatureStore, n: int, size: int, seed: int) -> float:
    """Seconds :meth:`FeatureStore.get` takes to encode ``n`` new photo crops (no cache hit)."""
    dataset = load_dataset("photos", "train", n=n, seed=seed)
    start = time.perf_counter()
    store.get(dataset, view_key(size, 2 * size, None, seed), view_batches(dataset, size, 2 * size))
    return time.perf_counter() - start


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def group_wall_time(checkpoint: str, sets: list[str]) -> tuple[float, float]:
    from eqbench.overrides import parse_overrides
    from eqbench.protocols.run import EvalConfig, evaluate

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
    parser.add_argument("--n", type=int, default=1024, help="images per round")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--rounds",
        type=int,
        default=24,
        help="alternations (with 12 the ratio moved by ±0.03 from run to run on 2 shared cores)",
    )
    parser.add_argument("--skip-group", action="store_true")
    parser.add_argument("--group-set", nargs="*", default=[])
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's allocator as it is (see eqbench.allocator), to measure the difference",
    )
    args = parser.parse_args()
    kept = False if args.glibc_defaults else keep_freed_memory()
    torch.manual_seed(0)
    encoder = create_encoder(args.arch, img_size=args.size).eval()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.arch} at {args.size}px, batch {args.batch_size}, "
        f"{args.rounds} rounds of {args.n} images, freed memory kept: {kept}"
    )
    batches = ready_batches(args.n, args.size, args.batch_size)
    cpu = torch.device("cpu")
    stores = {
        prefetch: FeatureStore(
            encoder, "bench", cpu, None, args.batch_size, show_progress=False, prefetch=prefetch
        )
        for prefetch in (False, True)
    }
    bare_forward(encoder, batches[:1])  # warm-up: weights, allocator, photo decoding
    for prefetch, store in stores.items():
        extraction(store, args.batch_size, args.size, seed=10_000 + prefetch)
    times: dict[str, list[float]] = {"bare": [], "ours": [], "prefetch": []}
    for r in range(args.rounds):
        times["bare"].append(bare_forward(encoder, batches))
        times["ours"].append(extraction(stores[False], args.n, args.size, seed=2 + 2 * r))
        times["prefetch"].append(extraction(stores[True], args.n, args.size, seed=3 + 2 * r))
    images = args.n * args.rounds
    rate = {k: images / sum(v) for k, v in times.items()}
    runs = {k: [args.n / t for t in v] for k, v in times.items()}
    labels = {"bare": "bare forward", "ours": "eqbench extraction", "prefetch": "  with prefetch"}
    for key, label in labels.items():
        print(f"{label + ':':20s} {rate[key]:8.1f} images/s  (rounds: {_fmt(runs[key])})")
    for name, key in (("ratio", "ours"), ("  with prefetch", "prefetch")):
        per_round = [b / o for b, o in zip(times["bare"], times[key], strict=True)]
        print(
            f"{name + ':':16s} {rate[key] / rate['bare']:.2f}  (target >= 0.90; per round median "
            f"{statistics.median(per_round):.2f}, range {min(per_round):.2f}-{max(per_round):.2f})"
        )
    if not args.skip_group:
        for ckpt in ("baseline:pixels", f"baseline:random:{args.arch}"):
            cold, warm = group_wall_time(ckpt, args.group_set)
            print(f"synthetic group, {ckpt}: cold cache {cold:6.1f}s, warm cache {warm:6.1f}s")


if __name__ == "__main__":
    main()
