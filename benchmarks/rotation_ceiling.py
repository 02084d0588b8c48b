"""How much rotation R² do the held-out photos allow? A ceiling for ``synthetic/rotation``.

The rotation task regresses θ ∈ [-45°, 45°] from the pair ``(I, g_θ I)`` of *held-out* photos
(``photos`` test split: flower, chelsea, grace_hopper, coins, gravel). This script rebuilds exactly
the task's test pairs (same data seed, same θ, same views cut from a 2× context) and scores two
estimators on them, overall and per source photo:

* **pixel matching** (no learning): θ̂ = the angle φ on a 0.5° grid whose rotation of ``I`` best
  matches ``g_θ I`` by normalised cross-correlation of the grey levels inside the inscribed disc
  (the only pixels a rotated ``I`` still covers). This is what the pixels allow an estimator that
  knows the task is a rotation about the centre.
* **a positive control's own head** (``--run DIR``, a ``rotation_supervised`` pretraining run):
  the supervised head the encoder was trained with, applied to the same pairs; what the
  supervision itself reached, against which the frozen-feature probe is compared.

R² is scikit-learn's ``r2_score`` against the true θ. Usage:

    python benchmarks/rotation_ceiling.py [--run runs/pc/rotsup-grid-1000] [--n-test 2000]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import r2_score

from eqbench.backbones import create_encoder
from eqbench.data import load_dataset
from eqbench.errors import CheckpointError, ConfigError, EqbenchError
from eqbench.methods import build_method
from eqbench.methods.rotation_supervised import RotationSupervised
from eqbench.protocols.base import generator
from eqbench.protocols.views import context_size, view_batches
from eqbench.train import load_pretrain_config
from eqbench.train.state import ENCODER_PREFIX, TRAIN_STATE_KEY, read_training_checkpoint
from eqbench.transforms import build_transform

VIEW = 64
DEGREES = (-45.0, 45.0)
#: Fewest pairs worth an R².
MIN_PAIRS = 10


def test_pairs(
    n: int, seed: int, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """``(I, g_θ I, θ in degrees, photo label)`` as ``synthetic/rotation`` builds ``split``."""
    transform = build_transform("rotation", VIEW, degrees=list(DEGREES))
    context = context_size(VIEW, 2.0, [transform])
    dataset = load_dataset("photos", split, n=n, seed=seed)
    params = transform.sample(len(dataset), generator(seed, split, transform.name, "params"))
    index = list(range(len(dataset)))
    identity = view_batches(dataset, VIEW, context)(index)
    rotated = view_batches(dataset, VIEW, context, transform, params)(index)
    theta = transform.target(params)[:, 0]
    labels = np.asarray([dataset.labels[i] for i in index])
    return identity, rotated, theta, labels


def pixel_matching(
    identity: torch.Tensor, rotated: torch.Tensor, step: float = 0.5, radius: float = 30.0
) -> torch.Tensor:
    """θ̂ per pair by grid search over φ of the NCC between ``rot_φ(I)`` and ``g_θ I``."""
    grey = lambda x: x.mean(dim=1, keepdim=True)  # noqa: E731
    a, b = grey(identity), grey(rotated)
    yy, xx = torch.meshgrid(
        torch.arange(VIEW) - (VIEW - 1) / 2, torch.arange(VIEW) - (VIEW - 1) / 2, indexing="ij"
    )
    disc = (xx**2 + yy**2 <= radius**2).float()
    transform = build_transform("rotation", VIEW, degrees=list(DEGREES))
    angles = torch.arange(DEGREES[0], DEGREES[1] + step / 2, step)

    def normalised(x: torch.Tensor) -> torch.Tensor:
        x = x * disc
        mean = x.sum(dim=(2, 3), keepdim=True) / disc.sum()
        x = (x - mean) * disc
        return x / x.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]

    target = normalised(b)
    best = torch.full((a.shape[0],), -math.inf)
    estimate = torch.zeros(a.shape[0])
    for phi in angles:
        params = torch.full((a.shape[0], 1), float(phi))
        score = (normalised(transform.apply(a, params)) * target).flatten(1).sum(dim=1)
        better = score > best
        best = torch.where(better, score, best)
        estimate = torch.where(better, torch.full_like(estimate, float(phi)), estimate)
    return estimate


def load_head(run: Path) -> RotationSupervised:
    """The run's encoder and supervised head, validated and loaded (a ``rotation_supervised`` run
    written by ``eqbench pretrain``).

    Raises:
        EqbenchError: no such run, bad config, not a ``rotation_supervised`` run, or a checkpoint
            that does not load (read with ``weights_only=True``).
    """
    if not (run / "config.yaml").is_file() or not (run / "checkpoint.pt").is_file():
        raise ConfigError(
            f"{run} is not a pretraining run folder (needs config.yaml and checkpoint.pt); pass "
            "the --out folder of `eqbench pretrain -c rotation_supervised_photos_cpu`."
        )
    cfg = load_pretrain_config(str(run / "config.yaml"))  # typed and checked, like `pretrain`
    if cfg.method != "rotation_supervised":
        raise ConfigError(f"{run} is a '{cfg.method}' run; pass a rotation_supervised run.")
    encoder = create_encoder(cfg.backbone, img_size=cfg.img_size, **cfg.backbone_options)
    method = build_method(cfg.method, encoder, cfg.img_size, cfg.method_options)
    assert isinstance(method, RotationSupervised)
    state = read_training_checkpoint(run / "checkpoint.pt")
    full = {f"{ENCODER_PREFIX}{k}": v for k, v in state["backbone"].items()}
    full.update(state[TRAIN_STATE_KEY]["method_state"])
    try:
        method.load_state_dict(full)
    except RuntimeError as err:
        raise CheckpointError(
            f"{run}/checkpoint.pt does not fit its config.yaml ({str(err).splitlines()[0]}); "
            "pass an unmodified run folder."
        ) from None
    return method.eval()


def head_predictions(
    method: RotationSupervised, identity: torch.Tensor, rotated: torch.Tensor
) -> torch.Tensor:
    """θ̂ in degrees from a positive control's own supervised head."""
    out = []
    with torch.inference_mode():
        for i in range(0, identity.shape[0], 256):
            features = method.encoder(torch.cat([identity[i : i + 256], rotated[i : i + 256]]))
            f1, f2 = features.pooled(method.pool).chunk(2)
            pred = method.head(torch.cat([f1, f2], dim=1)).float()
            out.append(pred * method.target_std + method.target_mean)
    return torch.cat(out)[:, 0]


def report(
    name: str, theta: np.ndarray, estimate: np.ndarray, labels: np.ndarray, names: list[str]
) -> None:
    """Overall and per-photo R² and median absolute error."""
    parts = [f"all {r2_score(theta, estimate):.3f}"]
    for label in sorted(set(labels.tolist())):
        keep = labels == label
        if keep.sum() < 2:  # R² needs two pairs
            parts.append(f"{names[label]} n/a")
            continue
        parts.append(f"{names[label]} {r2_score(theta[keep], estimate[keep]):.3f}")
    err = np.median(np.abs(theta - estimate))
    print(f"{name:<16} R²: " + ", ".join(parts) + f"; median |error| {err:.1f}°")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=2000, help="test pairs (the task's n_test)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (eqbench eval's --seed)")
    parser.add_argument("--run", type=Path, help="a rotation_supervised run folder to score")
    parser.add_argument(
        "--split",
        default="test",
        choices=("test", "train"),
        help="the task's held-out pairs (test) or its probe-training pairs (train photos)",
    )
    parser.add_argument("--skip-pixels", action="store_true", help="score the head only")
    args = parser.parse_args()
    from eqbench.data.photos import PHOTO_NAMES

    if args.n_test < MIN_PAIRS:
        parser.error(f"--n-test must be at least {MIN_PAIRS} (R² over pairs), got {args.n_test}.")
    if args.skip_pixels and args.run is None:
        parser.error("--skip-pixels leaves nothing to score; also pass --run DIR.")
    try:  # every input checked, and the head loaded, before any pair is made
        head = load_head(args.run) if args.run is not None else None
    except EqbenchError as err:
        parser.error(str(err))
    start = time.perf_counter()
    identity, rotated, theta_deg, labels = test_pairs(args.n_test, args.seed, args.split)
    theta = theta_deg.numpy()
    print(
        f"{len(theta)} {args.split}-split pairs, θ in [{DEGREES[0]:.0f}°, {DEGREES[1]:.0f}°]; "
        f"photos: {', '.join(PHOTO_NAMES[i] for i in sorted(set(labels.tolist())))}"
    )
    if not args.skip_pixels:
        estimate = pixel_matching(identity, rotated).numpy()
        report("pixel matching", theta, estimate, labels, list(PHOTO_NAMES))
    if head is not None:
        report(
            "supervised head",
            theta,
            head_predictions(head, identity, rotated).numpy(),
            labels,
            list(PHOTO_NAMES),
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
