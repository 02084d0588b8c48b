"""``eqbench pretrain``: the thin command over :func:`eqbench.train.pretrain`.

Registered in the main CLI by ``main.add_command(pretrain_command, "pretrain")``.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from eqbench.errors import EqbenchError
from eqbench.overrides import parse_overrides

if TYPE_CHECKING:
    from eqbench.train.launch import SlurmOptions

logger = logging.getLogger(__name__)


def _help_epilog() -> str:
    from eqbench.methods import METHODS
    from eqbench.train.config import available_configs

    return (
        f"\b\nMethods: {', '.join(METHODS.names())}.\n"
        f"Shipped configs: {', '.join(available_configs()) or 'none'}."
    )


class _PretrainCommand(click.Command):
    """Lists the registered methods and shipped configs under ``--help``; turns
    :class:`EqbenchError` into a one-line message when run on its own (the main group does the
    same when it is registered there)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text(_help_epilog())

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except EqbenchError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)


def submit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the ``--submit`` options (shared by ``eqbench pretrain`` and ``eqbench eval``) to a
    click command, which receives them as one argument, ``submit_to``: validated
    :class:`~eqbench.train.launch.SlurmOptions` (bad values fail before any work), or ``None``
    without ``--submit``."""

    @functools.wraps(command)
    def with_submit(
        *args: Any,
        submit: str | None,
        nodes: int,
        gpus_per_node: int,
        tasks_per_node: int,
        cpus_per_task: int,
        partition: str | None,
        account: str | None,
        time_min: int,
        mem_gb: int | None,
        **kwargs: Any,
    ) -> Any:
        submit_to = None
        if submit is not None:
            from eqbench.train.launch import SlurmOptions

            submit_to = SlurmOptions(
                cluster=submit,
                nodes=nodes,
                gpus_per_node=gpus_per_node,
                tasks_per_node=tasks_per_node,
                cpus_per_task=cpus_per_task,
                partition=partition,
                account=account,
                time_min=time_min,
                mem_gb=mem_gb,
            )
        return command(*args, submit_to=submit_to, **kwargs)

    options = [
        click.option(
            "--submit",
            type=click.Choice(["slurm", "local"]),
            default=None,
            help="Submit through submitit instead of running here: 'slurm' (sbatch; one task "
            "per GPU, requeued on pre-emption) or 'local' (processes on this machine; waits).",
        ),
        click.option("--nodes", default=1, show_default=True, type=int, help="With --submit."),
        click.option(
            "--gpus-per-node",
            default=8,
            show_default=True,
            type=int,
            help="With --submit (0: CPU).",
        ),
        click.option(
            "--tasks-per-node", default=1, show_default=True, type=int, help="CPU tasks (no GPUs)."
        ),
        click.option(
            "--cpus-per-task", default=10, show_default=True, type=int, help="With --submit."
        ),
        click.option("--partition", default=None, help="SLURM partition."),
        click.option("--account", default=None, help="SLURM account."),
        click.option(
            "--time-min", default=24 * 60, show_default=True, type=int, help="Job time limit."
        ),
        click.option("--mem-gb", default=None, type=int, help="Memory per node (GiB)."),
    ]
    decorated: Callable[..., Any] = with_submit
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


@click.command(cls=_PretrainCommand)
@click.option(
    "--config",
    "-c",
    "config",
    required=True,
    help="A shipped config name (e.g. vicreg_photos_cpu) or a path to a YAML file.",
)
@click.option(
    "--set",
    "-s",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key (YAML value; dotted keys reach into method_options). Repeatable.",
)
@click.option(
    "--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run folder."
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@submit_options
def pretrain_command(
    config: str,
    overrides: tuple[str, ...],
    out: str,
    resume: bool,
    submit_to: SlurmOptions | None,
) -> None:
    """Pretrain a backbone with a self-supervised method (SimCLR, VICReg, DINO, iBOT, TIR+...).

    Writes OUT/config.yaml, OUT/log.jsonl and OUT/checkpoint.pt (an eqbench checkpoint that
    `eqbench eval --checkpoint OUT/checkpoint.pt` reads). Launch with torchrun for several
    processes.

    \b
    Examples:
      eqbench pretrain --config tir_vicreg_photos_cpu --out runs/tir
      eqbench pretrain -c vicreg_photos_cpu --set steps=20 --set seed=1 --out runs/v1
      torchrun --nproc_per_node=8 -m eqbench.cli pretrain -c tir_vicreg_vits16_imagenet \\
          --set dataset=imagefolder:/data/imagenet --out runs/tir_in1k
      eqbench pretrain -c tir_vicreg_vits16_imagenet --set dataset=imagefolder:/data/imagenet \\
          --out runs/tir_in1k --submit slurm --nodes 2 --gpus-per-node 8 --partition gpu
    """
    from eqbench.train import load_pretrain_config, pretrain

    cfg = load_pretrain_config(config, parse_overrides(overrides))
    if submit_to is not None:
        from eqbench.train.launch import submit_pretrain

        job = submit_pretrain(cfg, out, submit_to, resume=resume)
        click.echo(
            f"Submitted job {job.job_id}; logs in {submit_to.folder or Path(out) / 'slurm'}."
        )
        if submit_to.cluster == "slurm":
            return
        path = Path(job.results()[0])
        click.echo(f"Checkpoint: {path}")
        return
    path = pretrain(cfg, out, resume=resume)
    click.echo(f"Checkpoint: {path}")


if __name__ == "__main__":  # pragma: no cover  (torchrun -m eqbench.train.cli ...)
    from eqbench.allocator import keep_freed_memory

    keep_freed_memory()
    pretrain_command()
