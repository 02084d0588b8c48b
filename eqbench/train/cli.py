"""``eqbench pretrain``: the thin command over :func:`eqbench.train.pretrain`.

Registered in the main CLI by ``main.add_command(pretrain_command, "pretrain")``.
"""

from __future__ import annotations

import logging
import sys

import click

from eqbench.config import parse_overrides
from eqbench.errors import EqbenchError

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
def pretrain_command(config: str, overrides: tuple[str, ...], out: str, resume: bool) -> None:
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
    """
    from eqbench.train import load_pretrain_config, pretrain

    cfg = load_pretrain_config(config, parse_overrides(overrides))
    path = pretrain(cfg, out, resume=resume)
    click.echo(f"Checkpoint: {path}")


if __name__ == "__main__":  # pragma: no cover  (torchrun -m eqbench.train.cli ...)
    pretrain_command()
