"""Running an mmengine ``Runner``: the shared runtime config, quiet logs, resumable checkpoints.

Checkpoints written by mmengine hold numpy scalars and dtypes (in the message hub's logs and the
metadata), which torch's ``weights_only`` loader refuses, and the logs' ``HistoryBuffer`` s, which
pickle functions through ``builtins.getattr``. Rather than turning that check off,
:class:`PlainMessageHubHook` stores the logs as plain arrays and :func:`mmengine_safe_globals`
allows exactly the numpy types, and only while a run trains, resumes or tests.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
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

log = logging.getLogger(__name__)

#: Registered name of :class:`PlainMessageHubHook`; marker key of a flattened buffer.
PLAIN_HOOK = "EqbenchPlainMessageHubHook"
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


def register_hooks() -> None:
    """Register :class:`PlainMessageHubHook` in mmengine's root ``HOOKS`` (idempotent)."""
    HOOKS.register_module(name=PLAIN_HOOK, module=PlainMessageHubHook, force=True)


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


def train_and_test(config: Config) -> dict[str, float]:
    """Build a Runner from ``config``, train (resuming from ``work_dir`` when it holds a
    checkpoint), then run the test loop; returns the test metrics."""
    from eqbench.openmmlab.backbone import register_backbone

    register_backbone()
    register_hooks()
    runner = Runner.from_cfg(config)
    with mmengine_safe_globals():  # both may load work_dir's last checkpoint
        runner.train()
        metrics = runner.test()
    log.info("mmengine test metrics: %s", metrics)
    return {str(k): float(v) for k, v in metrics.items()}
