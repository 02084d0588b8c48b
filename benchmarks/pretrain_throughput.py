"""Training throughput of the pretraining engine against a bare hand-written loop, and the time
overhead of TIR over its base.

For each method, the same model, loss, optimiser and batch size run
1. through :func:`eqbench.train.pretrain` (data loading, schedules, gradient clipping, logging,
   checkpoints) — images/s read from its log after the warm-up window;
2. in a bare loop on a ready-made uint8 batch: ``loss = method(batch)["loss"]``, ``backward``,
   ``AdamW.step`` — nothing else.
Prints images/s of both, the engine overhead (target ≤ 5 %) and TIR's time per step over its base
(the paper reports 7–15 % on GPUs). On a GPU, ``--amp``/``--no-amp`` and ``--compile`` compare bf16
autocast and ``torch.compile``; peak memory and model FLOPs utilisation are printed there.

Usage: python benchmarks/pretrain_throughput.py [--pairs vicreg:tir+vicreg,dinov2:tir+dinov2]
       [--steps 30] [--backbone vit_tiny_patch16] [--img-size 64] [--batch-size 64] [--device auto]
       [--compile] [--no-amp] [--peak-tflops 989] [--bare-only] [--flops]

The paper's Table 3 point: --backbone vit_small_patch16 --img-size 224 --batch-size 32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from eqbench.allocator import keep_freed_memory
from eqbench.backbones import create_encoder
from eqbench.device import autocast, resolve_device
from eqbench.methods import TrainBatch, build_method
from eqbench.train import load_pretrain_config, pretrain
from eqbench.train.schedule import parameter_groups

CONFIGS = {
    "vicreg": "vicreg_photos_cpu",
    "tir+vicreg": "tir_vicreg_photos_cpu",
    "simclr": "simclr_photos_cpu",
    "tir+simclr": "tir_simclr_photos_cpu",
    "dinov2": "dinov2_photos_cpu",
    "tir+dinov2": "tir_dinov2_photos_cpu",
}


def config_for(method: str, args: argparse.Namespace, steps: int) -> Any:
    overrides = {
        "steps": steps,
        "warmup_steps": 1,
        "backbone": args.backbone,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "n_images": max(2000, args.batch_size * 4),
        "device": args.device,
        "amp": args.amp,
        "log_every": args.warmup,
        "checkpoint_every": steps,
        "tensorboard": False,
    }
    return load_pretrain_config(CONFIGS[method], overrides)


def engine_rate(method: str, args: argparse.Namespace) -> float:
    """images/s of the engine after its first ``--warmup`` steps."""
    steps = args.warmup + args.steps
    cfg = config_for(method, args, steps)
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(cfg, Path(tmp) / "run")
        lines = (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if "images_per_s" in r]
    timed = [r for r in rows if r["step"] > args.warmup]
    seconds = sum(args.warmup * cfg.batch_size / r["images_per_s"] for r in timed)
    return len(timed) * args.warmup * cfg.batch_size / seconds


def bare_rate(method: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """(images/s, peak GPU memory in GiB, model TFLOP per step) of a bare loop."""
    cfg = config_for(method, args, args.steps)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    encoder = create_encoder(cfg.backbone, img_size=cfg.img_size)
    model = build_method(cfg.method, encoder, cfg.img_size, cfg.method_options).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-4)
    images = torch.randint(0, 256, (cfg.batch_size, 3, cfg.img_size, cfg.img_size))
    images = images.to(torch.uint8).to(device)
    step_fn = torch.compile(model) if args.compile else model
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        with autocast(device, cfg.amp):
            loss = step_fn(TrainBatch(images, generator))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if model.has_teacher:  # the engine's EMA step, so both loops do the same work
            model.update_teacher(0.996)

    flops = 0.0
    if device.type == "cuda" or args.flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops() / 1e12
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = args.steps * cfg.batch_size / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return rate, peak, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="vicreg:tir+vicreg", help="base:tir pairs, comma-sep.")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--backbone", default="vit_tiny_patch16")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the bare loop")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak")
    parser.add_argument(
        "--flops",
        action="store_true",
        help="also count each step's FLOPs on the CPU (one extra step; a hardware-independent "
        "TIR overhead)",
    )
    parser.add_argument(
        "--bare-only",
        action="store_true",
        help="time the bare loop only (TIR's overhead; skips the engine's, halves the time)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does (eqbench.allocator)

    device = resolve_device(args.device)
    print(
        f"device={device} backbone={args.backbone} img={args.img_size} batch={args.batch_size} "
        f"amp={args.amp and device.type == 'cuda'} compile={args.compile} threads="
        f"{torch.get_num_threads()}"
    )
    print(f"{'method':<12} {'engine img/s':>13} {'bare img/s':>11} {'overhead':>9}", end="")
    print(f" {'peak GiB':>9} {'TFLOP/step':>11} {'MFU':>6}" if device.type == "cuda" else "")
    rates: dict[str, float] = {}
    step_flops: dict[str, float] = {}
    for pair in args.pairs.split(","):
        for method in pair.split(":"):
            engine = float("nan") if args.bare_only else engine_rate(method, args)
            bare, peak, flops = bare_rate(method, args)
            rates[method] = bare
            step_flops[method] = flops
            line = f"{method:<12} {engine:>13.1f} {bare:>11.1f} {1 - engine / bare:>9.1%}"
            if device.type == "cuda":
                mfu = flops * bare / args.batch_size / args.peak_tflops
                line += f" {peak:>9.2f} {flops:>11.3f} {mfu:>6.1%}"
            elif args.flops:
                line += f" {flops:>11.3f} TFLOP/step"
            print(line, flush=True)
    for pair in args.pairs.split(","):
        base, tir = pair.split(":")
        print(f"TIR time overhead {tir} over {base}: {rates[base] / rates[tir] - 1:.1%} per step")
        if step_flops[base] > 0:
            extra = step_flops[tir] / step_flops[base] - 1
            print(f"TIR FLOP overhead {tir} over {base}: {extra:.1%} per step")


if __name__ == "__main__":
    main()
