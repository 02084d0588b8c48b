"""Time and peak memory of the kNN classifier at ImageNet scale, on synthetic features.

Builds ``--n-train`` × ``--dim`` train features (default 1 281 167 × 384, ImageNet-1k's train set
and a ViT-S/16 feature) in ``--classes`` clusters, and ``--n-test`` queries (default 50 000, the
val set), then times :func:`eqbench.protocols.classification.knn.knn_classify` with DINO's ``k`` =
10/20/100/200.

Prints the wall time and the memory the computation took besides the features:

* CPU: the process's peak resident set size (``resource.getrusage``, ``ru_maxrss``) before and
  after the kNN call; the features are built in place beforehand, so the increase is the kNN's own;
* CUDA: ``torch.cuda.max_memory_allocated`` during the call (the features start on the CPU and the
  train side is moved to the GPU one shard at a time, as ``eqbench eval --device cuda`` does).

The full size needs about 2 GB of RAM for the features and hours on two CPU cores (the product
alone is 1.28 M × 50 k × 384 × 2 ≈ 49 TFLOP); use --n-train/--n-test for a quick run, e.g.
``python benchmarks/knn_scale.py --n-train 200000 --n-test 5000``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from eqbench.protocols.classification.knn import DEFAULT_KS, MAX_BLOCK_ELEMENTS, knn_classify

IMAGENET_TRAIN = 1_281_167
IMAGENET_VAL = 50_000


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory, in MiB (Linux reports KiB)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def clustered(
    n: int, centres: torch.Tensor, noise_scale: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random centres plus ``noise_scale`` × Gaussian noise, filled block by block so that
    no temporary of size ``n`` is made (the peak memory then is the features themselves)."""
    feats = torch.empty(n, centres.shape[1])
    labels = torch.randint(0, centres.shape[0], (n,), generator=gen)
    for lo in range(0, n, 65536):
        rows = labels[lo : lo + 65536]
        noise = torch.randn(len(rows), centres.shape[1], generator=gen)
        feats[lo : lo + 65536] = centres[rows] + noise_scale * noise
    return feats, labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n-train", type=int, default=IMAGENET_TRAIN, help="train features (ImageNet-1k: 1281167)"
    )
    parser.add_argument(
        "--n-test", type=int, default=IMAGENET_VAL, help="query features (ImageNet val: 50000)"
    )
    parser.add_argument("--dim", type=int, default=384, help="feature size (ViT-S: 384)")
    parser.add_argument("--classes", type=int, default=1000, help="clusters / classes")
    parser.add_argument(
        "--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="numbers of neighbours"
    )
    parser.add_argument("--chunk-size", type=int, default=1024, help="queries per block")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help=f"train rows per block (default: blocks of at most {MAX_BLOCK_ELEMENTS} similarities)",
    )
    parser.add_argument(
        "--noise", type=float, default=3.0, help="noise / centre scale (3: accuracy well below 1)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(args.classes, args.dim, generator=gen)
    train, train_y = clustered(args.n_train, centres, args.noise, gen)
    test, test_y = clustered(args.n_test, centres, args.noise, gen)
    features_mib = (train.numel() + test.numel()) * 4 / 2**20
    before = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = knn_classify(
        train,
        train_y,
        test,
        test_y,
        ks=args.ks,
        num_classes=args.classes,
        chunk_size=args.chunk_size,
        shard_size=args.shard_size,
        device=device,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    after = peak_rss_mib()

    print(
        f"kNN {args.n_train} train x {args.n_test} queries x {args.dim} dims, "
        f"ks={args.ks}, {args.classes} classes, on {device} ({torch.get_num_threads()} threads)"
    )
    print(f"  wall time              {wall:.1f} s")
    print(f"  features (input)       {features_mib:.0f} MiB")
    print(f"  peak RSS before / after {before:.0f} / {after:.0f} MiB (+{after - before:.0f} MiB)")
    if device.type == "cuda":
        gpu = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"  peak GPU memory        {gpu:.0f} MiB")
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
