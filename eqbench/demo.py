"""``eqbench demo``: the main job on the built-in default, as one library function.

Pretrain VICReg (Bardes et al., arXiv 2105.04906), TIR+VICReg (Wang et al., AAAI-26, arXiv
2503.18753) and TIR's matched control (the same config with lambda = 0) with the same seed, steps
and data on the built-in ``photos``, evaluate them on the ``synthetic`` transform-prediction group
and the kNN classifier, and return the leaderboard folder. Sized to finish in about fifteen
minutes on two CPU cores; every size is an option, so the same
function runs the science check at other budgets (``benchmarks/tir_science.py``).

A second call with the same options reuses finished runs (and resumes interrupted ones from their
last checkpoint); the feature cache makes re-evaluation cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqbench.errors import ConfigError

log = logging.getLogger(__name__)

#: The demo's models: a display name → (shipped pretraining config, extra overrides).
#: ``tir+vicreg (control)`` is the matched control of ``method.md``: the same rotated second view
#: and feature split as TIR, without the reconstruction decoders.
#: ``tir+vicreg-k1`` / ``-k3`` are the paper's Table 9 ablation (K = 1, 3 intermediate targets;
#: K = 2 is ``tir+vicreg``); ``-lambda0.1`` / ``-lambda5`` the reconstruction-weight sweep around
#: the paper's λ = 1 (which reports λ > 5 as unstable); ``rotation_supervised`` is the probes'
#: positive control (an encoder trained with supervision to predict the rotation between two
#: views, same backbone and budget).
DEMO_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "vicreg": ("vicreg_photos_cpu", {}),
    "tir+vicreg": ("tir_vicreg_photos_cpu", {}),
    "tir+vicreg-control": ("tir_vicreg_photos_cpu", {"method_options.recon_weight": 0.0}),
    "tir+vicreg-k1": ("tir_vicreg_photos_cpu", {"method_options.num_targets": 1}),
    "tir+vicreg-k3": ("tir_vicreg_photos_cpu", {"method_options.num_targets": 3}),
    "tir+vicreg-lambda0.1": ("tir_vicreg_photos_cpu", {"method_options.recon_weight": 0.1}),
    "tir+vicreg-lambda5": ("tir_vicreg_photos_cpu", {"method_options.recon_weight": 5.0}),
    "rotation_supervised": ("rotation_supervised_photos_cpu", {}),
    "rotation_supervised-grid": (
        "rotation_supervised_photos_cpu",
        {"method_options.pool": "grid"},
    ),
}


#: Global features the probes can read (the ``feature`` option of the tasks).
#: (``auto`` and :data:`eqbench.backbones.base.FEATURE_KINDS`, spelt out to keep torch out of
#: this module's imports.)
FEATURES = ("auto", "cls", "avgpool", "cls+avgpool", "grid")


@dataclass
class DemoConfig:
    """Options of :func:`run_demo` (the flags of ``eqbench demo``).

    Attributes:
        out: folder for the runs (``out/runs/<model>``) and results (``out/results``).
        models: names from :data:`DEMO_MODELS`.
        steps: pretraining steps of every model (same budget for all).
        seed: seed of pretraining and evaluation.
        n_images: training images drawn from the built-in photos.
        tasks: tasks or groups to evaluate.
        n_train: training pairs/images of every probe (the task files default to more).
        n_test: test pairs/images of every probe.
        feature: the global feature every probe reads. **eqbench default for the demo**
            ``auto``: the feature each checkpoint's method trained, which for VICReg and TIR is
            the mean patch token (``pool: avgpool`` in their configs); no loss touches their CLS
            token, so the CLS token (the task files' default, right for DINO-style
            checkpoints) would score an untrained path.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        cache_dir: feature cache (``None``: no on-disk cache).
        pretrain_overrides: extra ``--set`` values for every pretraining config.
        results: results folder (default ``out/results``).
        eval_overrides: extra task options for every evaluation (e.g. ``{"feature": "avgpool"}``).
        show_progress: progress bars.
    """

    out: Path = Path("runs/demo")
    models: tuple[str, ...] = ("vicreg", "tir+vicreg", "tir+vicreg-control")
    steps: int = 200
    seed: int = 0
    n_images: int = 2000
    tasks: str = "synthetic,classification/knn"
    n_train: int = 1000
    n_test: int = 500
    feature: str = "auto"
    device: str = "auto"
    cache_dir: Path | None = None
    pretrain_overrides: dict[str, Any] = field(default_factory=dict)
    results: Path | None = None
    eval_overrides: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in DEMO_MODELS]
        if unknown:
            from eqbench.registry import did_you_mean

            raise ConfigError(
                f"Unknown demo model '{unknown[0]}'.{did_you_mean(unknown[0], list(DEMO_MODELS))}"
                f" Choose from: {', '.join(DEMO_MODELS)}."
            )
        if not self.models:
            raise ConfigError("The demo needs at least one model.")
        if self.feature not in FEATURES:
            raise ConfigError(
                f"demo: unknown feature '{self.feature}'; choose from {', '.join(FEATURES)}."
            )
        for key in ("steps", "n_images", "n_train", "n_test"):
            if getattr(self, key) < 1:
                raise ConfigError(f"demo: '{key}' must be >= 1, got {getattr(self, key)}.")


def run_dir(cfg: DemoConfig, model: str) -> Path:
    """The pretraining folder of one demo model (``+`` is kept out of folder names)."""
    return cfg.out / "runs" / f"{model.replace('+', '_')}_seed{cfg.seed}"


def results_dir(cfg: DemoConfig) -> Path:
    """Where the demo's result JSONs go."""
    return cfg.results or cfg.out / "results"


def pretrain_model(cfg: DemoConfig, model: str) -> Path:
    """Pretrain (or reuse, or resume) one demo model; returns its checkpoint."""
    from eqbench.train import load_pretrain_config, pretrain

    config_name, extra = DEMO_MODELS[model]
    warmup = max(1, min(25, cfg.steps // 10))
    overrides: dict[str, Any] = {
        "steps": cfg.steps,
        "warmup_steps": warmup,
        "checkpoint_every": max(1, cfg.steps // 4),
        "seed": cfg.seed,
        "n_images": cfg.n_images,
        "device": cfg.device,
        "name": f"{model}:{cfg.steps}steps:seed{cfg.seed}",
        **extra,
        **cfg.pretrain_overrides,
    }
    pcfg = load_pretrain_config(config_name, overrides)
    folder = run_dir(cfg, model)
    resume = (folder / "checkpoint.pt").is_file()
    if resume:
        log.info("resuming (or reusing) %s in %s", model, folder)
    return pretrain(pcfg, folder, resume=resume, progress=cfg.show_progress)


def eval_overrides(cfg: DemoConfig) -> dict[str, Any]:
    """The task options every demo evaluation sets."""
    return {
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
        "feature": cfg.feature,
        **cfg.eval_overrides,
    }


def evaluate_model(cfg: DemoConfig, checkpoint: Path) -> None:
    """Evaluate one checkpoint on the demo tasks into :func:`results_dir`."""
    from eqbench.protocols.run import EvalConfig, evaluate

    evaluate(
        EvalConfig(
            tasks=cfg.tasks,
            checkpoint=str(checkpoint),
            seed=cfg.seed,
            results_dir=results_dir(cfg),
            device=cfg.device,
            cache_dir=cfg.cache_dir,
            overrides=eval_overrides(cfg),
            show_progress=cfg.show_progress,
        )
    )


def run_demo(cfg: DemoConfig, announce: Callable[[str], None] = log.info) -> Path:
    """Pretrain every model of ``cfg.models``, evaluate each, and return the results folder.

    Args:
        cfg: the demo's options.
        announce: called with a one-line message before each stage (the CLI prints them).
    """
    from eqbench.protocols.run import EvalConfig, plan

    # validate the evaluation options before spending minutes on pretraining
    plan(
        EvalConfig(
            tasks=cfg.tasks,
            checkpoint="baseline:pixels",
            overrides=eval_overrides(cfg),
        )
    )
    checkpoints = {}
    for i, model in enumerate(cfg.models, 1):
        announce(f"[{i}/{len(cfg.models)}] pretraining {model} ({cfg.steps} steps)")
        checkpoints[model] = pretrain_model(cfg, model)
    for i, model in enumerate(cfg.models, 1):
        announce(f"[{i}/{len(cfg.models)}] evaluating {model} on {cfg.tasks}")
        evaluate_model(cfg, checkpoints[model])
    return results_dir(cfg)
