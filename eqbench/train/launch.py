"""Launch :func:`eqbench.train.pretrain` on SLURM (or locally) through submitit.

submitit (https://github.com/facebookincubator/submitit) writes the sbatch script, starts one task
per GPU and pickles the call; :class:`PretrainJob` turns each task's SLURM variables into the
``torchrun``-style ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` environment that
:mod:`eqbench.train.distributed` reads, so the same engine runs under torchrun, srun or submitit.
A pre-empted or timed-out job is requeued and resumes from its last checkpoint
(:class:`submitit.helpers.Checkpointable`). The ``local`` cluster runs the tasks as processes on
this machine, which is how the tests exercise the path without a cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqbench.errors import ConfigError, EqbenchError
from eqbench.train.config import PretrainConfig

logger = logging.getLogger(__name__)

CLUSTERS = ("slurm", "local")


@dataclass
class SlurmOptions:
    """Resources of a submitted job (pretraining or evaluation).

    Attributes:
        cluster: ``slurm`` (sbatch) or ``local`` (processes on this machine).
        nodes: number of nodes.
        gpus_per_node: GPUs (= tasks) per node; 0 runs one CPU task per node.
        cpus_per_task: CPU cores per task (data loading).
        partition: SLURM partition (``None``: the cluster's default).
        account: SLURM account.
        time_min: wall-clock limit in minutes (the job is requeued when it runs out).
        mem_gb: memory per node in GiB (``None``: the cluster's default).
        folder: where submitit keeps scripts, pickles and logs (default ``OUT/slurm``).
        tasks_per_node: tasks per node when ``gpus_per_node`` is 0 (CPU runs; gloo).
    """

    cluster: str = "slurm"
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 10
    partition: str | None = None
    account: str | None = None
    time_min: int = 24 * 60
    mem_gb: int | None = None
    folder: Path | None = None
    tasks_per_node: int = 1

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"Unknown cluster '{self.cluster}'; choose one of {CLUSTERS}.")
        for key in ("nodes", "cpus_per_task", "time_min", "tasks_per_node"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 1.")
        if self.gpus_per_node < 0:
            raise ConfigError("--gpus-per-node must be >= 0.")

    @property
    def ntasks_per_node(self) -> int:
        """One task per GPU, or ``tasks_per_node`` CPU tasks."""
        return self.gpus_per_node or self.tasks_per_node


def load_submitit() -> Any:
    """The ``submitit`` module, or an error naming how to install it."""
    try:
        import submitit
    except ImportError:
        raise EqbenchError(
            "Submitting to SLURM needs submitit: pip install 'eqbench[slurm]' (or "
            "pip install submitit). Alternatively launch with srun/torchrun yourself."
        ) from None
    return submitit


def export_distributed_environment() -> None:
    """In a submitit task of a multi-task job, set the ``torchrun``-style ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` from SLURM's variables
    (:mod:`eqbench.train.distributed` reads them); nothing for a single task."""
    submitit = load_submitit()
    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )


def make_executor(options: SlurmOptions, folder: Path, name: str) -> Any:
    """A submitit executor for ``options``, keeping its scripts and logs in ``folder``."""
    submitit = load_submitit()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
    params: dict[str, Any] = {
        "nodes": options.nodes,
        "tasks_per_node": options.ntasks_per_node,
        "cpus_per_task": options.cpus_per_task,
        "timeout_min": options.time_min,
        "name": name,
    }
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    if options.cluster == "slurm":
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.account:
            params["slurm_account"] = options.account
        params["slurm_signal_delay_s"] = 120
    executor.update_parameters(**params)
    return executor


class PretrainJob:
    """The callable submitit runs in every task: set up torch.distributed's environment from
    SLURM's, then pretrain (resuming when the run folder already holds a checkpoint)."""

    def __init__(self, cfg: PretrainConfig, out: Path, resume: bool) -> None:
        self.cfg, self.out, self.resume = cfg, out, resume

    def __call__(self) -> str:
        from eqbench.allocator import keep_freed_memory
        from eqbench.train.engine import pretrain

        keep_freed_memory()

        export_distributed_environment()
        resume = self.resume or (self.out / "checkpoint.pt").exists()
        return str(pretrain(self.cfg, self.out, resume=resume))

    def checkpoint(self) -> Any:
        """Requeue after pre-emption or time-out; the new job resumes from the checkpoint."""
        submitit = load_submitit()
        return submitit.helpers.DelayedSubmission(PretrainJob(self.cfg, self.out, resume=True))


def submit_pretrain(
    cfg: PretrainConfig, out: str | Path, options: SlurmOptions, resume: bool = False
) -> Any:
    """Submit a pretraining run; returns the submitit job (``job.result()`` waits for it).

    Raises:
        EqbenchError: submitit missing, or ``out`` already holds a run and ``resume`` is off.
    """
    load_submitit()
    out = Path(out)
    if (out / "checkpoint.pt").exists() and not resume:
        raise EqbenchError(
            f"'{out}' already holds a pretraining run. Pass --resume to continue it, or choose "
            "another --out."
        )
    if cfg.batch_size % (options.nodes * options.ntasks_per_node):
        raise ConfigError(
            f"batch_size {cfg.batch_size} does not split over "
            f"{options.nodes * options.ntasks_per_node} tasks."
        )
    folder = options.folder or out / "slurm"
    executor = make_executor(options, folder, f"eqbench-{cfg.run_name}")
    job = executor.submit(PretrainJob(cfg, out, resume))
    logger.info("submitted job %s (logs in %s)", job.job_id, folder)
    return job
