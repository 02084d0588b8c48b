"""Homography estimation on frozen features (DeTone et al. 2016, S-COCO), from any image dataset.

Pairs of patches (A, B) with B a perspective warp of A's neighbourhood are generated from the
dataset's images (see :mod:`eqbench.protocols.homography.head`); the frozen encoder's patch-token
maps of A and B are concatenated and a three-layer conv head regresses the four corner shifts.
Score: mean corner error in pixels on the test split's pairs (lower is better), beside the error of
the identity homography (predicting no shift).

Each source image gives ``pairs_per_image`` pairs (its own patch positions and corner shifts), so
the head sees many more pairs than images at the same encoding cost per pair; a validation split
of whole source images (``val_fraction`` of the training images) stops the head early and picks
its best state. Version 1 trained on one pair per image with no validation split, and its head
memorised them (train error 2.6 px, test 13 px, worse than the identity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eqbench.data.base import unit_float
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol, generator
from eqbench.protocols.homography.head import (
    HomographyTraining,
    PairParams,
    make_pair_views,
    mean_corner_error,
    predict_delta,
    sample_pairs,
    train_homography_head,
)


@dataclass(frozen=True)
class HomographyConfig:
    """Options of the homography task.

    Attributes:
        image_size: patch side ``P`` fed to the encoder.
        rho_fraction: maximal corner shift as a fraction of ``P`` (DeTone: 32 / 128).
        context_ratio: side of the source image / ``P`` (patches and warps stay inside it).
        n_train / n_test: source images per split.
        pairs_per_image: pairs cut from each source image (positions and shifts drawn anew).
        val_fraction: share of the training images whose pairs form the validation split.
        iterations / batch_size / lr / weight_decay / hidden: head training.
        eval_every / patience: early stopping on the validation corner error.
        probe_seeds: heads trained with seeds ``seed, seed + 1, ...``.
    """

    image_size: int = 64
    rho_fraction: float = 0.25
    context_ratio: float = 2.0
    n_train: int = 2000
    n_test: int = 500
    pairs_per_image: int = 8
    val_fraction: float = 0.2
    iterations: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    hidden: int = 64
    eval_every: int = 100
    patience: int = 5
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
        if self.pairs_per_image < 1 or self.eval_every < 1 or self.patience < 1:
            raise ValueError("pairs_per_image, eval_every and patience must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")

    def rho(self) -> float:
        return self.rho_fraction * self.image_size

    def context_size(self) -> int:
        return round(self.context_ratio * self.image_size)


def encode_pairs(
    cfg: HomographyConfig, ctx: EvalContext, split: str, n: int
) -> tuple[Tensor, PairParams, Tensor]:
    """Concatenated patch-token maps ``(N, 2D, h, w)`` of the pairs of ``split``, their
    parameters and the source image of each pair ``(N,)``; pair ``j`` comes from image
    ``j // pairs_per_image``."""
    dataset = ctx.open(split, n=n)
    context, patch, k = cfg.context_size(), cfg.image_size, cfg.pairs_per_image
    source = torch.arange(len(dataset) * k) // k
    params = sample_pairs(
        len(source), context, patch, cfg.rho(), generator(ctx.seed, split, "homography", k)
    )

    def views(which: int) -> Any:
        def make(indices: Sequence[int]) -> Tensor:
            images = unit_float(dataset.load(source[list(indices)].tolist(), context))
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
        "pairs_per_image": k,
    }
    n_pairs = len(source)
    f_a = ctx.store.patch_maps(dataset, {**what, "view": "a"}, views(0), n_pairs, f"{split} A")
    f_b = ctx.store.patch_maps(dataset, {**what, "view": "b"}, views(1), n_pairs, f"{split} B")
    return torch.cat([f_a, f_b], dim=1), params, source


@PROTOCOLS.register("homography")
class Homography(Protocol):
    """Regress the 4-corner homography between two patches from their frozen patch tokens."""

    Config = HomographyConfig
    metrics = ("mce", "mce_identity", "mce_train", "mce_val")
    units = dict.fromkeys(metrics, "px")
    lower_is_better = frozenset(metrics)

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: HomographyConfig = config
        x_all, p_all, source = encode_pairs(cfg, ctx, "train", cfg.n_train)
        x_te, p_te, _ = encode_pairs(cfg, ctx, "test", cfg.n_test)
        n_images = int(source.max()) + 1
        n_val = min(n_images - 1, max(1, round(cfg.val_fraction * n_images)))
        is_val = source >= n_images - n_val  # whole source images, never split across
        x_tr, d_tr = x_all[~is_val], p_all.delta[~is_val]
        x_val, d_val = x_all[is_val], p_all.delta[is_val]
        training = HomographyTraining(
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            hidden=cfg.hidden,
            eval_every=cfg.eval_every,
            patience=cfg.patience,
        )
        out: MetricValues = {}
        rho, device = cfg.rho(), ctx.store.device
        for i in range(cfg.probe_seeds):
            head = train_homography_head(
                x_tr, d_tr, rho, training, ctx.seed + i, device, val=(x_val, d_val)
            )
            scores = {
                "mce": mean_corner_error(predict_delta(head, x_te, rho, device), p_te.delta),
                "mce_train": mean_corner_error(predict_delta(head, x_tr, rho, device), d_tr),
                "mce_val": mean_corner_error(predict_delta(head, x_val, rho, device), d_val),
            }
            for name, value in scores.items():
                out.setdefault(name, []).append(value)
        out["mce_identity"] = [mean_corner_error(torch.zeros_like(p_te.delta), p_te.delta)]
        return out
