"""Running an mmengine ``Runner``: the shared runtime config, quiet logs, resumable checkpoints.

Checkpoints written by mmengine hold numpy scalars and dtypes (in the message hub's logs and the
metadata), which torch's ``weights_only`` loader refuses, and the logs' ``HistoryBuffer`` s, which
pickle functions through ``builtins.getattr``. Rather than turning that check off,
:class:`PlainMessageHubHook` stores the logs as plain arrays and :func:`mmengine_safe_globals`
allows exactly the numpy types, and only while a run trains, resumes or tests.

Under ``torchrun`` or a multi-task submitit job (``eqbench eval`` initialises the process group
first, :mod:`eqbench.train.distributed`), :func:`distribute` turns a one-process config into
mmengine's own distributed run: ``launcher='pytorch'`` (``'slurm'`` under submitit), the total
batch split over the processes, mmengine's ``DefaultSampler`` / ``InfiniteSampler`` sharding the
data, ``MMDistributedDataParallel`` wrapping the model and the evaluators gathering every
process's predictions before rank 0 scores them. mmengine's ``Runner.setup_env`` initialises
the group only when none is (``if self.distributed and not is_distributed(): init_dist(...)``,
mmengine 0.10), so the launcher names the launch and the group eqbench made is the one used.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqbench.openmmlab import require_openmmlab

require_openmmlab()  # a MissingDependencyError naming scripts/build_mmcv.sh, not an ImportError
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.logging import HistoryBuffer  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from eqbench.train.distributed import DistContext, global_batch_share  # noqa: E402

log = logging.getLogger(__name__)

#: Registered name of :class:`PlainMessageHubHook`; marker key of a flattened buffer.
PLAIN_HOOK = "EqbenchPlainMessageHubHook"
#: Registered name of :class:`MeanBuffersHook`.
MEAN_BUFFERS_HOOK = "EqbenchMeanBuffersHook"
PLAIN_BUFFER = "__eqbench_history_buffer__"


class PlainMessageHubHook(Hook):
    """Stores ``MessageHub``'s ``HistoryBuffer`` s in checkpoints as plain arrays and rebuilds
    them on load.

    A ``HistoryBuffer`` pickles its statistics methods through ``builtins.getattr``, which no
    ``weights_only`` allow-list should admit; as plain ``{"log_history", "count_history",
    "max_length"}`` dicts only numpy arrays remain (see :func:`checkpoint_safe_globals`).
    """

    priority = "VERY_LOW"  # after the hooks that add to the checkpoint

    def before_save_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        scalars = checkpoint.get("message_hub", {}).get("log_scalars", {})
        for key, buffer in list(scalars.items()):
            if isinstance(buffer, HistoryBuffer):
                log_history, count_history = buffer.data
                scalars[key] = {
                    PLAIN_BUFFER: True,
                    "log_history": np.asarray(log_history),
                    "count_history": np.asarray(count_history),
                    "max_length": int(buffer.max_length),
                }

    def after_load_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        scalars = checkpoint.get("message_hub", {}).get("log_scalars", {})
        for key, value in list(scalars.items()):
            if isinstance(value, dict) and value.get(PLAIN_BUFFER):
                scalars[key] = HistoryBuffer(
                    value["log_history"], value["count_history"], value["max_length"]
                )


class MeanBuffersHook(Hook):
    """After every training iteration, replaces the running statistics of each BatchNorm layer
    of the model by their mean over the processes.

    Without SyncBN (on the CPU) each process's BatchNorm layers update their running statistics
    from its own share of the batch. The running mean is linear in the batch means, so its mean
    over processes with equal shares is the one-process running mean; the running variance
    differs from the one-process one by the spread of the shares' means (and each share's
    ``n - 1`` in the unbiased variance). Averaged every iteration, before
    ``CheckpointHook`` saves, every process tests, and every checkpoint holds, the same model.
    mmengine's ``SyncBuffersHook`` averages the same way, but once an epoch, after the last
    iteration's checkpoint is written.
    """

    priority = "NORMAL"  # before CheckpointHook (VERY_LOW) in after_train_iter

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        import torch.distributed as torch_dist

        if not torch_dist.is_initialized() or torch_dist.get_world_size() < 2:
            return
        world = torch_dist.get_world_size()
        for module in runner.model.modules():
            if not isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                continue
            for stat in (module.running_mean, module.running_var):
                if stat is not None:  # None: track_running_stats=False
                    torch_dist.all_reduce(stat)
                    stat.div_(world)


def register_hooks() -> None:
    """Register :class:`PlainMessageHubHook` and :class:`MeanBuffersHook` in mmengine's root
    ``HOOKS`` (idempotent)."""
    HOOKS.register_module(name=PLAIN_HOOK, module=PlainMessageHubHook, force=True)
    HOOKS.register_module(name=MEAN_BUFFERS_HOOK, module=MeanBuffersHook, force=True)


def checkpoint_safe_globals() -> list[Any]:
    """The non-tensor types in mmengine checkpoints besides builtins, once
    :class:`PlainMessageHubHook` has flattened the logs: numpy scalars, arrays and dtypes (the
    logged values, the ETA, dataset metadata)."""
    # numpy 2 pickles these from numpy._core (numpy 1 from numpy.core)
    name = "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    multiarray = importlib.import_module(name)
    scalar, _reconstruct = multiarray.scalar, multiarray._reconstruct
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)}
    return [scalar, _reconstruct, np.ndarray, np.dtype, *sorted(dtypes, key=str)]


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Within the block, ``torch.load(weights_only=True)`` also accepts the numpy types of
    :func:`checkpoint_safe_globals`; outside it, nothing changes."""
    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        yield


def base_runtime(
    scope: str,
    work_dir: Path,
    seed: int,
    length: int,
    checkpoint_interval: int,
    by_epoch: bool = False,
) -> dict[str, Any]:
    """Runtime keys shared by the engines: scope, work dir, hooks, seed, quiet logs.

    Args:
        scope: ``mmseg`` or ``mmdet`` (the registry scope of the config's types).
        work_dir: logs and checkpoints.
        seed: mmengine's ``randomness`` seed.
        length: iterations (or epochs, with ``by_epoch``) of the run; a checkpoint is always
            written at its end.
        checkpoint_interval: write a checkpoint every this many iterations or epochs (0: only
            at the end).
        by_epoch: the run counts epochs (mmdet's schedules) rather than iterations.
    """
    interval = checkpoint_interval if checkpoint_interval > 0 else length
    return dict(
        default_scope=scope,
        work_dir=str(work_dir),
        experiment_name=f"eqbench-{scope}-{uuid.uuid4().hex[:12]}",
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(
                type="CheckpointHook",
                interval=interval,
                by_epoch=by_epoch,
                max_keep_ckpts=1,
                save_last=True,
            ),
            sampler_seed=dict(type="DistSamplerSeedHook"),
        ),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="gloo"),
        ),
        custom_hooks=[dict(type=PLAIN_HOOK)],
        randomness=dict(seed=seed, deterministic=False),
        log_processor=dict(by_epoch=by_epoch),
        log_level="WARNING",
        load_from=None,
        resume=True,  # continue from work_dir's last checkpoint when there is one
    )


def adamw_optim_wrapper(lr: float, weight_decay: float) -> dict[str, Any]:
    """The engines' optimiser: AdamW, no weight decay on position embeddings, the CLS token and
    norms (mmseg's ViT recipe).

    Args:
        lr: the peak learning rate.
        weight_decay: AdamW's decoupled weight decay of the other parameters.
    """
    return dict(
        type="OptimWrapper",
        optimizer=dict(type="AdamW", lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay),
        paramwise_cfg=dict(
            custom_keys=dict(
                pos_embed=dict(decay_mult=0.0),
                cls_token=dict(decay_mult=0.0),
                norm=dict(decay_mult=0.0),
            )
        ),
    )


def mmengine_launcher() -> str:
    """mmengine's name for how the processes were started: ``slurm`` in a submitit SLURM job
    (submitit exports ``SUBMITIT_EXECUTOR=slurm``), ``pytorch`` otherwise (``torchrun``)."""
    return "slurm" if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else "pytorch"


def distribute(config: Config, dist: DistContext) -> Config:
    """``config`` (a one-process run) as a run over ``dist``'s processes.

    * ``launcher``: :func:`mmengine_launcher`; the process group is already initialised, so
      mmengine does not initialise another.
    * ``train_dataloader.batch_size``: the total batch divided by the world size, so the paper
      settings' total batch (16 for UPerNet and Mask R-CNN) holds at any scale; the samplers
      give each process its share of every epoch (mmengine's ``DefaultSampler`` and
      ``InfiniteSampler`` shard by rank).
    * ``model_wrapper_cfg``: ``MMDistributedDataParallel`` as mmengine builds it by default,
      with ``find_unused_parameters`` (an eqbench encoder may hold weights the pyramid does not
      use, a classifier's head say) and, on the CPU, ``device_ids=None`` (mmengine passes
      ``[LOCAL_RANK]``, which DistributedDataParallel takes for a GPU index).
    * ``sync_bn='torch'`` on CUDA: the heads' BatchNorm layers normalise over the total batch,
      as in the multi-GPU recipes. torch's ``SyncBatchNorm`` runs on GPUs only: on the CPU each
      process normalises over its own share, and :class:`MeanBuffersHook` keeps the running
      statistics the processes' mean.
    * evaluators with ``collect_device='gpu'``: mmengine gathers the processes' predictions
      with ``all_gather_object`` (any backend, gloo included) rather than through a folder it
      would make in the working directory; rank 0 scores them and every rank gets the metrics.

    Raises:
        ConfigError: the total batch does not split evenly over the processes.
    """
    out = copy.deepcopy(config)
    loader = out.train_dataloader
    first, last = global_batch_share(int(loader.batch_size), dist, "OpenMMLab task")
    loader.batch_size = last - first
    out.launcher = mmengine_launcher()
    wrapper: dict[str, Any] = dict(
        type="MMDistributedDataParallel", broadcast_buffers=False, find_unused_parameters=True
    )
    if dist.device.type != "cuda":
        wrapper["device_ids"] = None
    out.model_wrapper_cfg = wrapper
    if dist.device.type == "cuda":
        out.sync_bn = "torch"
    else:
        out.custom_hooks = [*out.get("custom_hooks", []), dict(type=MEAN_BUFFERS_HOOK)]
    for key in ("val_evaluator", "test_evaluator"):
        evaluators = out.get(key)
        if evaluators is None:
            continue
        for metric in evaluators if isinstance(evaluators, list) else [evaluators]:
            metric.collect_device = "gpu"
    return out


def train_and_test(config: Config, dist: DistContext | None = None) -> dict[str, float]:
    """Build a Runner from ``config``, train (resuming from ``work_dir`` when it holds a
    checkpoint), then run the test loop; returns the test metrics (on every process).

    Args:
        config: a one-process run's config.
        dist: the launch, when the process group is initialised and spans more than one
            process: every process then calls this together and the run is :func:`distribute` d
            over them. A configured ``work_dir`` must then be a folder every process sees (rank 0
            writes the checkpoints, all resume from them).
    """
    from eqbench.openmmlab.backbone import register_backbone

    register_backbone()
    register_hooks()
    if dist is not None and dist.distributed:
        config = distribute(config, dist)
    runner = Runner.from_cfg(config)
    with mmengine_safe_globals():  # both may load work_dir's last checkpoint
        runner.train()
        if dist is not None:
            # rank 0 wrote the last checkpoint in the last iteration; the test loop of each
            # process loads work_dir's latest, so none may look before it is written
            dist.barrier()
        metrics = runner.test()
    log.info("mmengine test metrics: %s", metrics)
    return {str(k): float(v) for k, v in metrics.items()}
