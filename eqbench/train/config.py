"""The pretraining config: a typed dataclass read from YAML files in ``configs/pretrain/``.

A config is named (``vicreg_photos_cpu``, resolved in :func:`configs_dir`) or given as a path to
a YAML file. A file may start with ``include: other.yaml`` (relative to itself) to extend another
config; nested mappings (``method_options``) merge key by key, the including file winning.
``--set key=value`` overrides are applied last; dotted keys reach into mappings
(``--set method_options.d_equi=96``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eqbench.backbones.options import check_backbone_options
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.overrides import apply_overrides
from eqbench.registry import did_you_mean
from eqbench.resources import shipped_dir
from eqbench.yamlfiles import read_with_includes

#: Keys that may differ between a run and its resumption (they do not change the result).
RESUMABLE_KEYS = frozenset(
    {
        "steps",
        "checkpoint_every",
        "log_every",
        "device",
        "num_workers",
        "preload_max_mb",
        "tensorboard",
    }
)

#: Values of ``grad_clip_mode`` (implemented in :mod:`eqbench.train.clipping`).
CLIP_MODES = ("global", "per_parameter", "per_module")


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on.

    Attributes:
        method: a registered method (``simclr``, ``vicreg``, ``tir+vicreg``, ...).
        backbone: a registered backbone or timm name (``eqbench ls backbones``).
        backbone_options: architecture options (e.g. ``drop_path_rate``).
        img_size: side of the training views in pixels.
        load_size: side at which images are loaded before cropping (default ``img_size``).
        full_image: load each training image whole, resized to a ``load_size`` square with its
            aspect ratio kept aside, so that the views' random resized crops cover the full image
            as torchvision's ``RandomResizedCrop`` does in the reference recipes (area fraction
            of the whole image, aspect ratio in the original's pixels); ``false`` loads the
            ``load_size`` centre square (shorter side resized to ``load_size``).
        dataset: ``NAME`` or ``NAME:PATH`` (``eqbench ls datasets``).
        n_images: images in the training set (generated datasets) or a seeded subset.
        batch_size: global batch size (split evenly over processes).
        steps: optimisation steps.
        lr: peak learning rate (AdamW).
        lr_reference_batch: if set, the peak rate is ``lr · batch_size / lr_reference_batch``
            (the papers' ``lr·B/256`` rule).
        min_lr: learning rate at the end of the cosine decay.
        warmup_steps: linear warm-up steps from 0 to the peak rate.
        weight_decay: AdamW weight decay at the start (biases and norms get none).
        weight_decay_end: weight decay at the end (cosine schedule); ``None`` keeps it constant.
        betas: AdamW betas.
        grad_clip: maximum gradient norm; ``None`` disables clipping (official VICReg, SimCLR,
            MAE, AugSelf, E-SSL and SIE do not clip).
        grad_clip_mode: what ``grad_clip`` bounds (:mod:`eqbench.train.clipping`): ``global``,
            the norm of all gradients together; ``per_parameter``, each parameter's gradient
            separately (DINO, iBOT, GTSA: 3.0); ``per_module``, each top-level sub-module's
            gradients (backbone, each head) separately (DINOv2: 3.0).
        teacher_momentum: EMA momentum of a method's teacher at the start (DINO, arXiv
            2104.14294: 0.996); ignored by methods without a teacher.
        teacher_momentum_end: teacher momentum at the end (cosine schedule; DINO: 1.0).
        seed: seeds initialisation, data order and every augmentation.
        checkpoint_every: steps between checkpoints (one is also written at the end).
        log_every: steps between ``log.jsonl`` records.
        method_options: options of the method (see its docstring).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast on CUDA (ignored on the CPU).
        num_workers: data-loading worker processes when images are not preloaded.
        preload_max_mb: load the whole training set into memory first when it fits this size.
        name: model name recorded in checkpoints (default ``<method>_<backbone>_seed<seed>``).
        tensorboard: also write the logged scalars to ``OUT/tensorboard`` when the tensorboard
            package is installed (``pip install 'eqbench[tensorboard]'``).
    """

    method: str
    backbone: str = "vit_tiny_patch16"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    img_size: int = 64
    load_size: int | None = None
    full_image: bool = False
    dataset: str = "photos"
    n_images: int | None = None
    batch_size: int = 64
    steps: int = 250
    lr: float = 5e-4
    lr_reference_batch: int | None = None
    min_lr: float = 0.0
    warmup_steps: int = 10
    weight_decay: float = 0.05
    weight_decay_end: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    grad_clip_mode: str = "global"
    teacher_momentum: float = 0.996
    teacher_momentum_end: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    method_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    preload_max_mb: int = 1024
    name: str | None = None
    tensorboard: bool = True

    def __post_init__(self) -> None:
        positive = {
            "img_size": self.img_size,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"pretrain config: '{key}' must be >= 1, got {value}.")
        if self.batch_size < 2:
            raise ConfigError("pretrain config: 'batch_size' must be >= 2 for two-view losses.")
        if self.load_size is not None and self.load_size < 1:
            raise ConfigError("pretrain config: 'load_size' must be >= 1.")
        if self.n_images is not None and self.n_images < 1:
            raise ConfigError("pretrain config: 'n_images' must be >= 1.")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(
                f"pretrain config: need 0 <= warmup_steps <= steps, got warmup_steps="
                f"{self.warmup_steps} and steps={self.steps}. For a short run set both, e.g. "
                f"--set steps={self.steps} --set warmup_steps={max(0, min(self.steps // 10, 25))}."
            )
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError("pretrain config: need lr > 0 and 0 <= min_lr <= lr.")
        if self.weight_decay < 0 or (self.weight_decay_end or 0) < 0:
            raise ConfigError("pretrain config: weight decay must be >= 0.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError("pretrain config: 'grad_clip' must be > 0 (or null to disable).")
        if self.grad_clip_mode not in CLIP_MODES:
            hint = did_you_mean(self.grad_clip_mode, list(CLIP_MODES))
            raise ConfigError(
                f"pretrain config: unknown grad_clip_mode '{self.grad_clip_mode}'.{hint} "
                f"Use one of {', '.join(CLIP_MODES)}."
            )
        if not (0 <= self.teacher_momentum <= 1 and 0 <= self.teacher_momentum_end <= 1):
            raise ConfigError("pretrain config: teacher momenta must lie in [0, 1].")
        if self.num_workers < 0 or self.preload_max_mb < 0:
            raise ConfigError("pretrain config: num_workers and preload_max_mb must be >= 0.")
        check_backbone_options(self.backbone_options, "pretrain config")

    @property
    def peak_lr(self) -> float:
        """The peak learning rate after the batch-size scaling rule."""
        if self.lr_reference_batch is None:
            return self.lr
        return self.lr * self.batch_size / self.lr_reference_batch

    @property
    def run_name(self) -> str:
        """The model name written into checkpoints."""
        return self.name or f"{self.method}_{self.backbone}_seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what ``config.yaml`` and checkpoints hold)."""
        return to_dict(self)


def configs_dir() -> Path:
    """``$EQBENCH_PRETRAIN_CONFIGS`` or the shipped ``configs/pretrain/``
    (:func:`eqbench.resources.shipped_dir`)."""
    env = os.environ.get("EQBENCH_PRETRAIN_CONFIGS")
    return Path(env) if env else shipped_dir("configs") / "pretrain"


def available_configs() -> list[str]:
    """Names of the shipped pretraining configs."""
    folder = configs_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def configs_by_method() -> dict[str, list[str]]:
    """The shipped configs of each method, read from their (included) ``method:`` key."""
    out: dict[str, list[str]] = {}
    for name in available_configs():
        method = read_config_file(configs_dir() / f"{name}.yaml").get("method")
        out.setdefault(str(method), []).append(name)
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in ``path`` with its ``include:`` chain resolved."""
    return read_with_includes(path, "Config")


def resolve_config_path(name_or_path: str) -> Path:
    """A config file from a shipped name or a path; unknown names get a did-you-mean."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    named = configs_dir() / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    names = available_configs()
    hint = did_you_mean(name_or_path, names)
    raise ConfigError(
        f"Unknown pretraining config '{name_or_path}' (no such file, no such name).{hint} "
        f"Shipped configs: {', '.join(names) or 'none'} (in {configs_dir()})."
    )


def load_pretrain_config(
    name_or_path: str, overrides: dict[str, Any] | None = None
) -> PretrainConfig:
    """Read, merge and validate a pretraining config.

    Args:
        name_or_path: a shipped config name (``vicreg_photos_cpu``) or a YAML path.
        overrides: ``--set`` values (see :func:`eqbench.overrides.parse_overrides`).

    Raises:
        ConfigError: unknown name, bad YAML, unknown keys (did-you-mean) or bad values.
    """
    path = resolve_config_path(name_or_path)
    data = apply_overrides(read_config_file(path), overrides or {})
    return from_dict(PretrainConfig, data, f"pretrain config '{name_or_path}'")


def dump_config(cfg: PretrainConfig) -> str:
    """``cfg`` as YAML text, keys in field order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
