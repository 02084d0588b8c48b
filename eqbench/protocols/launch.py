"""Launch :func:`eqbench.protocols.run.evaluate` on SLURM (or locally) through submitit.

The evaluation counterpart of :mod:`eqbench.train.launch`, with the same
:class:`~eqbench.train.launch.SlurmOptions`: every task turns SLURM's variables into the
``torchrun`` environment and runs :func:`~eqbench.protocols.run.evaluate`, which shards feature
extraction over the tasks and fits the probes and writes the results on rank 0. A pre-empted job is
requeued and runs again; the image sets it had already encoded come back from the feature cache.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from eqbench.protocols.run import EvalConfig, evaluate, plan
from eqbench.train.launch import (
    SlurmOptions,
    export_distributed_environment,
    load_submitit,
    make_executor,
)

logger = logging.getLogger(__name__)


class EvalJob:
    """The callable submitit runs in every task: set up torch.distributed's environment from
    SLURM's, then evaluate. Returns the result files written (rank 0; ``[]`` elsewhere)."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg

    def __call__(self) -> list[str]:
        from eqbench.allocator import keep_freed_memory

        keep_freed_memory()
        export_distributed_environment()
        return [str(path) for _, path in evaluate(self.cfg)]

    def checkpoint(self) -> Any:
        """Requeue after pre-emption or time-out (encoded image sets come from the cache)."""
        submitit = load_submitit()
        return submitit.helpers.DelayedSubmission(EvalJob(self.cfg))


def slurm_folder(cfg: EvalConfig, options: SlurmOptions) -> Path:
    """Where submitit keeps the job's scripts and logs: ``options.folder``, else a folder
    beside ``--results-dir`` named after it (``results`` → ``results-slurm``), so that the
    results folder holds nothing but results."""
    results = Path(cfg.results_dir)
    return options.folder or results.with_name(f"{results.name or 'results'}-slurm")


def submit_evaluate(cfg: EvalConfig, options: SlurmOptions) -> Any:
    """Validate ``cfg`` (tasks, options, output folders) and submit the evaluation; returns the
    submitit job (``job.results()[0]`` waits for rank 0's list of result files).

    Raises:
        EqbenchError: submitit missing, or a bad task, option or folder (before submitting).
    """
    load_submitit()
    plan(cfg)  # bad input fails here, not in the queue
    job_cfg = dataclasses.replace(cfg, on_skip=None, show_progress=False)
    folder = slurm_folder(cfg, options)
    executor = make_executor(options, folder, "eqbench-eval")
    job = executor.submit(EvalJob(job_cfg))
    logger.info("submitted job %s (logs in %s)", job.job_id, folder)
    return job
