"""Homography estimation on frozen features (DeTone et al. 2016, S-COCO), from any image dataset.

Pairs of patches (A, B) with B a perspective warp of A's neighbourhood are generated from the
dataset's images (see :mod:`eqbench.eval.homography`); the frozen encoder's patch-token maps of A
and B are concatenated and a three-layer conv head regresses the four corner shifts. Score: mean
corner error in pixels on the test split's pairs (lower is better), beside the error of the
identity homography (predicting no shift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eqbench.eval.homography import (
    HomographyTraining,
    PairParams,
    make_pair_views,
    mean_corner_error,
    predict_delta,
    sample_pairs,
    train_homography_head,
)
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol, generator


@dataclass(frozen=True)
class HomographyConfig:
    """Options of the homography task.

    Attributes:
        image_size: patch side ``P`` fed to the encoder.
        rho_fraction: maximal corner shift as a fraction of ``P`` (DeTone: 32 / 128).
        context_ratio: side of the source image / ``P`` (patches and warps stay inside it).
        n_train / n_test: pairs per split (one per source image).
        iterations / batch_size / lr / weight_decay / hidden: head training.
        probe_seeds: heads trained with seeds ``seed, seed + 1, ...``.
    """

    image_size: int = 64
    rho_fraction: float = 0.25
    context_ratio: float = 2.0
    n_train: int = 2000
    n_test: int = 500
    iterations: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 128
    probe_seeds: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.rho_fraction < 0.5:
            raise ValueError("rho_fraction must be in (0, 0.5)")
        if self.context_size() - self.image_size - 2 * math.ceil(self.rho()) < 0:
            raise ValueError(
                f"context_ratio {self.context_ratio} leaves no room for corner shifts of "
                f"{self.rho():.1f}px; use context_ratio >= {1 + 2 * self.rho_fraction + 0.05:.2f}"
            )
        if self.n_train < 2 or self.n_test < 1 or self.iterations < 1 or self.probe_seeds < 1:
            raise ValueError("n_train >= 2, n_test, iterations and probe_seeds >= 1 are required")

    def rho(self) -> float:
        return self.rho_fraction * self.image_size

    def context_size(self) -> int:
        return round(self.context_ratio * self.image_size)


def encode_pairs(
    cfg: HomographyConfig, ctx: EvalContext, split: str, n: int
) -> tuple[Tensor, PairParams]:
    """Concatenated patch-token maps ``(N, 2D, h, w)`` of the pairs of ``split`` and their
    parameters."""
    dataset = ctx.open(split, n=n)
    context, patch = cfg.context_size(), cfg.image_size
    params = sample_pairs(
        len(dataset), context, patch, cfg.rho(), generator(ctx.seed, split, "homography")
    )

    def views(which: int) -> Any:
        def make(indices: Sequence[int]) -> Tensor:
            images = dataset.load(indices, context).float().div_(255.0)
            idx = list(indices)
            sub = PairParams(params.top_left[idx], params.delta[idx])
            return make_pair_views(images, sub, patch)[which].clamp_(0, 1).float()

        return make

    what = {
        "kind": "homography",
        "patch": patch,
        "context": context,
        "rho": cfg.rho(),
        "seed": ctx.seed,
    }
    f_a = ctx.store.patch_maps(dataset, {**what, "view": "a"}, views(0), label=f"{split} A")
    f_b = ctx.store.patch_maps(dataset, {**what, "view": "b"}, views(1), label=f"{split} B")
    return torch.cat([f_a, f_b], dim=1), params


@PROTOCOLS.register("homography")
class Homography(Protocol):
    """Regress the 4-corner homography between two patches from their frozen patch tokens."""

    Config = HomographyConfig
    metrics = ("mce", "mce_identity")

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: HomographyConfig = config
        x_tr, p_tr = encode_pairs(cfg, ctx, "train", cfg.n_train)
        x_te, p_te = encode_pairs(cfg, ctx, "test", cfg.n_test)
        training = HomographyTraining(
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            hidden=cfg.hidden,
        )
        out: MetricValues = {}
        for i in range(cfg.probe_seeds):
            head = train_homography_head(
                x_tr, p_tr.delta, cfg.rho(), training, ctx.seed + i, ctx.store.device
            )
            pred = predict_delta(head, x_te, cfg.rho(), ctx.store.device)
            out.setdefault("mce", []).append(mean_corner_error(pred, p_te.delta))
        out["mce_identity"] = [mean_corner_error(torch.zeros_like(p_te.delta), p_te.delta)]
        return out
