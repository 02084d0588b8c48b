"""``eqbench eval`` as a library function: run tasks on a checkpoint, write one JSON per task."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqbench.backbones import Encoder
from eqbench.backbones.input_size import size_multiple, snap_size
from eqbench.checkpoints import LoadedModel
from eqbench.data.base import DATASETS, DatasetSpec
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import CheckpointError, ConfigError
from eqbench.features.sharding import prefetch
from eqbench.features.store import FeatureStore, default_cache_dir
from eqbench.models import load_model
from eqbench.overrides import apply_overrides
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.base import MetricValues
from eqbench.provenance import environment
from eqbench.registry import did_you_mean
from eqbench.results.records import ResultRecord, summarise, write_result
from eqbench.tasks import TaskSpec, resolve_tasks
from eqbench.train import distributed

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Options of :func:`evaluate` (the flags of ``eqbench eval``)."""

    tasks: str
    checkpoint: str
    dataset: str | None = None
    seed: int = 0
    results_dir: Path = Path("results")
    device: str = "auto"
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    batch_size: int = 256
    overrides: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True
    #: called with ``(task name, reason)`` for each task skipped because an optional
    #: dependency is missing (default: a logged warning).
    on_skip: Callable[[str, str], None] | None = None


@dataclass
class PlannedTask:
    """A task with its validated protocol config.

    Attributes:
        adjustments: what eqbench changed for the model, e.g. ``{"image_size": {"requested": 64,
            "used": 70, "reason": ...}}`` (:func:`fit_tasks`); recorded in the result.
    """

    spec: TaskSpec
    config: Any
    overrides: dict[str, Any]
    adjustments: dict[str, Any] = field(default_factory=dict)


def resolve_feature(config: Any, model: LoadedModel) -> Any:
    """``config`` with ``feature: auto`` replaced by the feature the checkpoint's method trained
    (recorded by ``eqbench pretrain`` as ``trained_feature``), else ``cls``; the result JSON then
    records the feature actually read."""
    if getattr(config, "feature", None) != "auto":
        return config
    feature = model.info.get("trained_feature") or "cls"
    return dataclasses.replace(config, feature=feature)


#: Config fields that count something (images, pixels, seeds): a value below 1 is refused for
#: every protocol, whatever its own checks.
COUNT_FIELDS = ("n_train", "n_test", "image_size", "probe_seeds", "batch_size")


def check_output_dir(path: Path, option: str) -> None:
    """Refuse an output folder that is a file or cannot be created or written, before any work.

    Nothing is created here: the first existing ancestor must be a writable folder.
    """
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(
            f"{option} '{path}' cannot be used: '{probe}' is a file, not a folder. Choose "
            f"another {option}."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} '{path}' is not writable (no write permission on '{probe}'). Choose "
            f"another {option} or fix its permissions."
        )


def check_options(cfg: EvalConfig) -> None:
    """The options of :class:`EvalConfig` that are not task options."""
    batch = cfg.batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {cfg.batch_size}.")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"--seed must be an integer in [0, 2^32), got {cfg.seed}.")
    check_output_dir(Path(cfg.results_dir), "--results-dir")
    if cfg.cache_dir is not None:
        check_output_dir(Path(cfg.cache_dir), "--cache-dir")


def _check_counts(config: Any, where: str) -> None:
    for name in COUNT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ConfigError(f"{where}: '{name}' must be >= 1, got {value}.")


def plan(cfg: EvalConfig) -> list[PlannedTask]:
    """Resolve and validate every task before any work starts (bad input fails fast)."""
    check_options(cfg)
    specs = resolve_tasks(cfg.tasks)
    used: set[str] = set()
    planned = []
    for spec in specs:
        protocol = PROTOCOLS.get(spec.protocol)
        fields = {f.name for f in dataclasses.fields(protocol.Config)}
        # dotted keys reach into mapping options, as for pretraining (--set options.degrees=...)
        applied = {k: v for k, v in cfg.overrides.items() if k.partition(".")[0] in fields}
        used.update(applied)
        merged = apply_overrides(spec.config, applied)
        config: Any = from_dict(protocol.Config, merged, f"task {spec.name}")
        _check_counts(config, f"task {spec.name}")
        if spec.primary_metric not in protocol.metrics:
            raise ConfigError(
                f"Task '{spec.name}' names primary metric '{spec.primary_metric}', which protocol "
                f"'{spec.protocol}' does not report ({', '.join(protocol.metrics)})."
            )
        if (spec.primary_metric in protocol.lower_is_better) == spec.higher_is_better:
            raise ConfigError(
                f"Task '{spec.name}' says higher_is_better: {str(spec.higher_is_better).lower()}, "
                f"but protocol '{spec.protocol}' declares '{spec.primary_metric}' "
                f"{'lower' if spec.higher_is_better else 'higher'}-is-better; fix the task file."
            )
        planned.append(PlannedTask(spec, config, applied))
    unused = set(cfg.overrides) - used
    if unused:
        key = sorted(unused)[0]
        known = sorted({f.name for p in planned for f in dataclasses.fields(p.config)})
        raise ConfigError(
            f"--set {key}=... matches no option of the selected tasks."
            f"{did_you_mean(key.partition('.')[0], known)}"
        )
    if cfg.dataset is not None:
        DATASETS.get(DatasetSpec.parse(cfg.dataset).name)
    return planned


def fit_tasks(planned: list[PlannedTask], encoder: Encoder) -> list[PlannedTask]:
    """Snap each task's ``image_size`` to a size ``encoder`` accepts (a multiple of a ViT's
    patch size: 64 → 70 for patch 14; :mod:`eqbench.backbones.input_size`), revalidating the
    task's config at the new size and noting the change in ``adjustments``.

    Raises:
        ConfigError: a task cannot run at any snapped size (its own constraint, e.g. detection's
            multiple of 32, conflicts with the patch size); names the size that would work.
    """
    multiple = size_multiple(encoder)
    fitted = []
    for p in planned:
        size = getattr(p.config, "image_size", None)
        if not isinstance(size, int) or snap_size(size, multiple) == size:
            fitted.append(p)
            continue
        used = snap_size(size, multiple)
        try:
            config = dataclasses.replace(p.config, image_size=used)
        except (ValueError, ConfigError) as err:
            both = math.lcm(multiple, 32)
            raise ConfigError(
                f"Task '{p.spec.name}' cannot run this backbone (patch size {multiple}): its "
                f"image_size {size} is not a multiple of {multiple}, and {used} is refused by the "
                f"task ({err}). Pass --set image_size=<a multiple of {both}>, e.g. "
                f"{snap_size(max(size, both), both)}."
            ) from None
        reason = f"a multiple of the backbone's patch size {multiple}"
        change = {"image_size": {"requested": size, "used": used, "reason": reason}}
        log.info("task %s: image_size %d -> %d (%s)", p.spec.name, size, used, reason)
        fitted.append(dataclasses.replace(p, config=config, adjustments=change))
    return fitted


def check_finite_weights(model: LoadedModel) -> None:
    """Refuse a model with NaN or infinite weights (its features would score chance level)."""
    bad = [
        name
        for name, tensor in model.encoder.state_dict().items()
        if tensor.is_floating_point() and not bool(tensor.isfinite().all())
    ]
    if bad:
        raise CheckpointError(
            f"Model '{model.spec}' has NaN or infinite weights ({len(bad)} tensors, e.g. "
            f"'{bad[0]}'), so its features mean nothing. Use an earlier checkpoint of the run."
        )


def evaluate(cfg: EvalConfig) -> list[tuple[ResultRecord, Path]]:
    """Evaluate a checkpoint on tasks and write one result JSON per task.

    Steps: plan (validate tasks and options; skip tasks whose optional dependencies are missing,
    see :meth:`~eqbench.protocols.base.Protocol.unavailable`) → load the checkpoint → for each
    task, run its protocol through a shared feature store (so a group encodes each image set
    once) → write the record atomically.

    Launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set; :mod:`eqbench.train.distributed`)
    every process loads the model on its own device, the image sets of every task that lists
    them (:meth:`~eqbench.protocols.base.Protocol.feature_requests`) are encoded sharded over the
    processes (:mod:`eqbench.features.sharding`), the :attr:`~eqbench.protocols.base.Protocol.
    collective` tasks (``segmentation/linear``, ``detection/maskrcnn``, the OpenMMLab ones) run
    on every process together (each trains on a share of every batch, DistributedDataParallel;
    the OpenMMLab ones through mmengine's own distributed Runner), and the processes meet at a
    barrier and close the process group; then the other ranks return ``[]`` while rank 0 fits
    the probes, runs the tasks that list no image sets (the other dense ones) alone and writes
    the results, so a probe that takes hours keeps no collective waiting. The frozen-feature
    metrics are bit-identical to a single process's with the same ``batch_size``; a head trained
    with DDP follows the one-process training up to the order of float sums.

    Returns:
        ``(record, path)`` of each result written; ``[]`` on ranks other than 0.
    """
    planned = _runnable(cfg)
    if not planned:
        return []
    for p in planned:  # every task's data, before any model is loaded
        dataset = DatasetSpec.parse(cfg.dataset or p.spec.dataset)
        PROTOCOLS.get(p.spec.protocol)().preflight(
            p.config, dataset, cfg.seed, p.spec.primary_metric
        )
    dist_ctx = distributed.setup(cfg.device)
    try:
        return _run_tasks(cfg, planned, dist_ctx)
    finally:
        distributed.teardown(dist_ctx)


def _runnable(cfg: EvalConfig) -> list[PlannedTask]:
    """:func:`plan`, less the tasks whose optional dependencies are missing (reported through
    ``cfg.on_skip``)."""
    planned = []
    for p in plan(cfg):
        reason = PROTOCOLS.get(p.spec.protocol).unavailable()
        if reason is None:
            planned.append(p)
        elif cfg.on_skip is not None:
            cfg.on_skip(p.spec.name, reason)
        else:
            log.warning("Skipping task %s: %s", p.spec.name, reason)
    return planned


def _run_tasks(
    cfg: EvalConfig, planned: list[PlannedTask], dist_ctx: distributed.DistContext
) -> list[tuple[ResultRecord, Path]]:
    """Load the model, encode (sharded under torchrun), run the protocols, write the results."""
    device = dist_ctx.device
    image_size = max(getattr(p.config, "image_size", 224) for p in planned)
    model: LoadedModel = load_model(cfg.checkpoint, img_size=image_size)
    check_finite_weights(model)
    planned = fit_tasks(planned, model.encoder)
    planned = [dataclasses.replace(p, config=resolve_feature(p.config, model)) for p in planned]
    store = FeatureStore(
        model.encoder,
        model.sha256,
        device,
        cfg.cache_dir,
        batch_size=cfg.batch_size,
        show_progress=cfg.show_progress and dist_ctx.is_main,
    )
    contexts = [
        EvalContext(
            model=model,
            store=store,
            dataset=DatasetSpec.parse(cfg.dataset or p.spec.dataset),
            seed=cfg.seed,
        )
        for p in planned
    ]
    encode_s = [0.0] * len(planned)
    ran: dict[int, tuple[MetricValues, float]] = {}
    if dist_ctx.distributed:
        encode_s = _encode_sharded(planned, contexts, store, dist_ctx)
        ran = _run_collective(planned, contexts, dist_ctx)
        dist_ctx.barrier()
        # no collective from here on: rank 0 alone fits probes (or runs a dense task's own
        # training), however long it takes, and no library sees a live process group
        distributed.teardown(dist_ctx)
        if not dist_ctx.is_main:
            return []
    env = environment(device)
    if dist_ctx.distributed:
        env["world_size"] = dist_ctx.world_size
    written = []
    for i, (p, ctx, encoded_in) in enumerate(zip(planned, contexts, encode_s, strict=True)):
        if i in ran:
            values, seconds = ran[i]
        else:
            log.info("task %s on %s with %s", p.spec.name, ctx.dataset, model.model_id)
            start = time.perf_counter()
            values = PROTOCOLS.get(p.spec.protocol)().run(p.config, ctx)
            seconds = time.perf_counter() - start
        wall = encoded_in + seconds
        n_seeds = max(len(v) for v in values.values())
        fingerprint = ctx.open("test", n=getattr(p.config, "n_test", None)).fingerprint()
        record = ResultRecord(
            task=p.spec.name,
            task_version=p.spec.version,
            protocol=p.spec.protocol,
            model_id=model.model_id,
            checkpoint=model.spec,
            checkpoint_sha256=model.sha256,
            dataset=str(ctx.dataset),
            dataset_fingerprint=fingerprint,
            metrics={k: summarise(v) for k, v in values.items()},
            primary_metric=p.spec.primary_metric,
            higher_is_better=p.spec.higher_is_better,
            seed=cfg.seed,
            probe_seeds=[cfg.seed + i for i in range(n_seeds)],
            config=to_dict(p.config),
            overrides=p.overrides,
            adjustments={**p.adjustments, **ctx.adjustments},
            weights=model.info.get("weights"),
            environment=env,
            wall_time_s=round(wall, 3),
        )
        written.append((record, write_result(record, cfg.results_dir)))
    return written


def _encode_sharded(
    planned: list[PlannedTask],
    contexts: list[EvalContext],
    store: FeatureStore,
    dist_ctx: distributed.DistContext,
) -> list[float]:
    """Encode every task's listed image sets sharded over the processes (a collective call).

    Returns:
        Seconds spent encoding per task (added to its wall time).
    """
    seconds = [0.0] * len(planned)
    for i, (p, ctx) in enumerate(zip(planned, contexts, strict=True)):
        protocol = PROTOCOLS.get(p.spec.protocol)()
        if protocol.collective:
            continue  # encodes its own share when it runs
        requests = protocol.feature_requests(p.config, ctx)
        if requests is None:
            if dist_ctx.is_main:
                log.warning(
                    "task %s does not list its images beforehand; it runs on rank 0 alone",
                    p.spec.name,
                )
            continue
        start = time.perf_counter()
        prefetch(store, requests, dist_ctx)
        seconds[i] = time.perf_counter() - start
    return seconds


def _run_collective(
    planned: list[PlannedTask], contexts: list[EvalContext], dist_ctx: distributed.DistContext
) -> dict[int, tuple[MetricValues, float]]:
    """Run the :attr:`~eqbench.protocols.base.Protocol.collective` tasks on every process, in
    order, with the process group alive (a collective call).

    Returns:
        ``task index -> (values, seconds)``; the values are rank 0's.
    """
    out = {}
    for i, (p, ctx) in enumerate(zip(planned, contexts, strict=True)):
        protocol = PROTOCOLS.get(p.spec.protocol)()
        if not protocol.collective:
            continue
        if dist_ctx.is_main:
            log.info("task %s on %s on %d processes", p.spec.name, ctx.dataset, dist_ctx.world_size)
        ctx.dist = dist_ctx
        start = time.perf_counter()
        values = protocol.run(p.config, ctx)
        out[i] = (values, time.perf_counter() - start)
        ctx.dist = None
    return out
