"""Do the dense tasks learn on the built-in ``shapes``? Prints the figures behind the claims.

1. ``segmentation/linear``: mIoU of the frozen linear probe against predicting the majority
   class, for a random micro ViT and raw pixels.
2. ``dense/homography``: mean corner error of the head against the identity (no shift), at the
   task's own sizes.
3. ``detection/maskrcnn``: COCO box / mask AP of a finetuned Mask R-CNN against one on a frozen
   random-init backbone, at the same budget, with wall times.

Usage: python benchmarks/dense_learning.py [--arch micro_vit] [--size 64] [--iterations 300]
       [--n-train 200] [--n-test 50] [--threads 2] [--skip-seg] [--skip-homography]
       [--detection both|frozen|finetuned|none]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from eqbench.allocator import keep_freed_memory
from eqbench.data.base import DatasetSpec
from eqbench.features.store import FeatureStore
from eqbench.models import load_model
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.detection import MaskRcnnConfig
from eqbench.protocols.homography import HomographyConfig
from eqbench.protocols.segmentation import SegmentationLinearConfig


def context(spec: str, dataset: str, size: int) -> EvalContext:
    model = load_model(spec, img_size=size)
    store = FeatureStore(model.encoder, model.sha256, torch.device("cpu"), None)
    return EvalContext(model, store, DatasetSpec.parse(dataset), seed=0)


def run(protocol: str, cfg: object, ctx: EvalContext) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    out = PROTOCOLS.get(protocol)().run(cfg, ctx)
    return {k: v[0] for k, v in out.items()}, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="micro_vit")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-seg", action="store_true")
    parser.add_argument("--skip-homography", action="store_true")
    parser.add_argument(
        "--detection",
        default="both",
        choices=["both", "frozen", "finetuned", "none"],
        help="which Mask R-CNN runs (separate processes can run them side by side)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does (eqbench.allocator)
    torch.set_num_threads(args.threads)
    random_spec = f"baseline:random:{args.arch}"

    if not args.skip_seg:
        for spec in (random_spec, "baseline:pixels"):
            cfg = SegmentationLinearConfig(
                image_size=args.size, n_train=args.n_train, n_test=args.n_test, iterations=300
            )
            m, wall = run("segmentation_linear", cfg, context(spec, "shapes", args.size))
            print(
                f"segmentation/linear  {spec:28s} mIoU {100 * m['miou']:.1f}  "
                f"majority {100 * m['miou_majority']:.1f}  ({wall:.0f}s)",
                flush=True,
            )
    if not args.skip_homography:
        for spec in (random_spec, "baseline:pixels"):
            # the task's own pair counts (2000 / 500 images, 8 pairs each): on 200 images the
            # head cannot beat predicting no shift
            hcfg = HomographyConfig(image_size=args.size)
            m, wall = run("homography", hcfg, context(spec, "photos", args.size))
            print(
                f"dense/homography     {spec:28s} MCE {m['mce']:.2f}px  train {m['mce_train']:.2f}"
                f"  val {m['mce_val']:.2f}  identity {m['mce_identity']:.2f}  ({wall:.0f}s)",
                flush=True,
            )
    runs = {"both": (True, False), "frozen": (True,), "finetuned": (False,), "none": ()}
    for frozen in runs[args.detection]:
        dcfg = MaskRcnnConfig(
            image_size=args.size,
            n_train=args.n_train,
            n_test=args.n_test,
            iterations=args.iterations,
            frozen=frozen,
            fpn_channels=128,
            proposals=200,
            rois_per_image=128,
            detections_per_image=20,
            warmup_iterations=min(50, args.iterations // 5),
            lr=3e-4,
        )
        m, wall = run("maskrcnn", dcfg, context(random_spec, "shapes", args.size))
        kind = "frozen random-init" if frozen else "finetuned from random"
        print(
            f"detection/maskrcnn   {kind:28s} box AP {100 * m['box_ap']:.1f} "
            f"(AP50 {100 * m['box_ap50']:.1f})  mask AP {100 * m['mask_ap']:.1f} "
            f"(AP50 {100 * m['mask_ap50']:.1f})  train {m['train_s']:.0f}s, total {wall:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
