"""The ``eqbench`` command line: a thin click shell over the library functions."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from eqbench.allocator import keep_freed_memory
from eqbench.demo import DEMO_MODELS
from eqbench.errors import EqbenchError
from eqbench.train.cli import submit_options

if TYPE_CHECKING:
    from eqbench.protocols.run import EvalConfig
    from eqbench.train.launch import SlurmOptions

console = Console()
err_console = Console(stderr=True)


class EqbenchGroup(click.Group):
    """Turns :class:`EqbenchError` into a one-line message and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EqbenchError as exc:
            print_error(str(exc))
            sys.exit(exc.exit_code)
        except OSError as exc:  # a full disk, a folder that cannot be written, ...
            print_error(os_error_message(exc))
            sys.exit(EqbenchError.exit_code)
        except KeyboardInterrupt:
            err_console.print("[bold red]Interrupted.[/]")
            sys.exit(130)


def print_error(message: str) -> None:
    """``Error: message`` on stderr, the message printed literally (no rich markup or emoji
    codes: a path holding ``[/]`` or ``:x:`` is shown as it is)."""
    line = " ".join(message.split())
    err_console.print(Text.assemble(("Error:", "bold red"), " ", line), soft_wrap=True)


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error, naming the file and the remedy."""
    where = f" ('{exc.filename}')" if exc.filename else ""
    return (
        f"{exc.strerror or exc}{where}. Free disk space or fix the folder's permissions, or "
        "choose another folder, and run again."
    )


class LazyHelpOption(click.Option):
    """An option whose help is computed from the registries when ``--help`` is shown, so the
    command line starts without importing them."""

    def __init__(self, *args: Any, help_fn: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help_fn = help_fn

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self.help_fn()
        return super().get_help_record(ctx)


def _checkpoint_help() -> str:
    from eqbench.models import describe

    return "The model: " + describe()


@click.group(cls=EqbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eqbench")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """eqbench: how much transformation information a visual representation keeps
    (equivariance) and how well it serves invariance tasks, for any checkpoint.

    \b
    Typical use:
      eqbench ls tasks
      eqbench eval --task synthetic --checkpoint baseline:pixels
      eqbench leaderboard
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
    keep_freed_memory()  # CPU forward passes stop re-faulting their activations (eqbench.allocator)


# ---------------------------------------------------------------------------------------------- ls
LS_WHAT = [
    "tasks",
    "groups",
    "datasets",
    "backbones",
    "transforms",
    "protocols",
    "methods",
    "schemes",
    "formats",
    "zoo",
]


@main.command("ls")
@click.argument("what", type=click.Choice(LS_WHAT))
def ls_command(what: str) -> None:
    """List tasks, groups, datasets, backbones, transforms, protocols, pretraining methods,
    model-spec schemes, checkpoint formats or model-zoo cards."""
    from eqbench import catalogue

    rows, headers = catalogue.listing(what)
    table = Table(title=f"eqbench {what}", title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*row)
    if not rows:
        console.print(f"No {what} yet.")
        return
    console.print(table)


# -------------------------------------------------------------------------------------------- eval
@main.command("eval")
@click.option("--task", "-t", "tasks", required=True, help="Task(s) or group(s), comma-separated.")
@click.option(
    "--checkpoint",
    "-c",
    required=True,
    cls=LazyHelpOption,
    help_fn=_checkpoint_help,
)
@click.option("--dataset", "-d", default=None, help="NAME or NAME:PATH (default: each task's own).")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Data seed; probes use seed..seed+2."
)
@click.option(
    "--results-dir", default="results", show_default=True, type=click.Path(path_type=Path)
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-size", default=256, show_default=True, type=int, help="Images per forward pass."
)
@click.option(
    "--cache-dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Feature cache folder [default: $EQBENCH_CACHE_DIR or ~/.cache/eqbench/features].",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the on-disk feature cache.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a task option (repeatable), e.g. --set n_train=2000; dotted keys reach "
    "into mapping options, as in pretrain: --set options.degrees=[-10,10].",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@submit_options
def eval_command(
    tasks: str,
    checkpoint: str,
    dataset: str | None,
    seed: int,
    results_dir: Path,
    device: str,
    batch_size: int,
    cache_dir: Path | None,
    no_cache: bool,
    sets: tuple[str, ...],
    quiet: bool,
    submit_to: SlurmOptions | None,
) -> None:
    """Evaluate a checkpoint on tasks; writes one result JSON per task under --results-dir.

    Launched by torchrun (or with --submit), the processes share the images to encode (each
    one encoded once, in the batches one process would make, so the metrics are bit-identical
    to one process's with the same --batch-size); rank 0 fits the probes and writes the
    results. segmentation/linear trains its head on every process (DDP, the total batch_size
    kept); --set work_dir=DIR makes it resumable after a kill.

    \b
    Examples:
      eqbench eval -t synthetic -c runs/tir/checkpoint.pt
      torchrun --nproc_per_node=8 -m eqbench.cli eval -t classification/knn \\
          -c runs/tir/checkpoint.pt -d imagefolder:/data/imagenet
      eqbench eval -t core -c runs/tir/checkpoint.pt --submit slurm --nodes 2 \\
          --gpus-per-node 8 --partition gpu
    """
    from eqbench.features.store import default_cache_dir
    from eqbench.overrides import parse_overrides
    from eqbench.protocols.run import EvalConfig, evaluate
    from eqbench.train.distributed import launched_rank

    main_process = launched_rank() == 0
    cfg = EvalConfig(
        tasks=tasks,
        checkpoint=checkpoint,
        dataset=dataset,
        seed=seed,
        results_dir=results_dir,
        device=device,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        batch_size=batch_size,
        overrides=parse_overrides(sets),
        show_progress=not quiet,
        on_skip=report_skip if main_process else lambda task, reason: None,
    )
    if submit_to is not None:
        submit_eval(cfg, submit_to)
        return
    table = Table("task", "dataset", "metric", "value", "time", title=f"{checkpoint}")
    from eqbench.protocols.base import metric_unit
    from eqbench.results.leaderboard import format_cell

    results = evaluate(cfg)
    if not main_process:  # torchrun: rank 0 reports and writes the results
        return
    if not results:
        console.print("No task ran; no result written.")
        return
    for record, _ in results:
        m = record.primary
        table.add_row(
            record.task,
            record.dataset,
            record.primary_metric,
            format_cell(m["mean"], m["std"], metric_unit(record.protocol, record.primary_metric)),
            f"{record.wall_time_s:.1f}s",
        )
    console.print(table)
    console.print(f"Results written under [bold]{results_dir}[/]. Run `eqbench leaderboard`.")


def submit_eval(cfg: EvalConfig, options: SlurmOptions) -> None:
    """``eqbench eval --submit``: submit the evaluation; with the local cluster, wait for it."""
    from eqbench.protocols.launch import slurm_folder, submit_evaluate

    job = submit_evaluate(cfg, options)
    console.print(f"Submitted job {job.job_id}; logs in {slurm_folder(cfg, options)}.")
    if options.cluster == "slurm":
        return
    written = job.results()[0]  # rank 0's result files; raises if a task failed
    for path in written:
        console.print(f"Wrote {path}", soft_wrap=True)
    console.print(f"Results written under [bold]{cfg.results_dir}[/]. Run `eqbench leaderboard`.")


def report_skip(task: str, reason: str) -> None:
    """Tell the user a task was skipped because an optional dependency is missing."""
    console.print(f"[yellow]Skipped {task}[/]: {reason}")


# ------------------------------------------------------------------------------------- leaderboard
@main.command("leaderboard")
@click.option(
    "--results-dir", default="results", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "csv", "html"]),
    default="table",
    show_default=True,
)
@click.option(
    "--write",
    is_flag=True,
    help="Write leaderboard.md/.csv/.html into --results-dir (the committed leaderboards).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 if the leaderboard files in --results-dir differ from the result JSONs.",
)
def leaderboard_command(results_dir: Path, fmt: str, write: bool, check: bool) -> None:
    """Aggregate result JSONs into a leaderboard (never mixing task versions)."""
    from eqbench.results import leaderboard as lb
    from eqbench.results import publish

    if write:
        for path in publish.write_all(results_dir):
            console.print(f"Wrote {path}")
        return
    if check:
        bad = publish.stale(results_dir)
        if bad:
            err_console.print(
                f"[bold red]Stale leaderboards in {results_dir}:[/] {', '.join(bad)}. Run "
                f"`eqbench leaderboard --results-dir {results_dir} --write` and commit them."
            )
            sys.exit(1)
        console.print(f"Leaderboards in {results_dir} are up to date.")
        return
    if fmt == "md":
        click.echo(lb.to_markdown(results_dir), nl=False)
        return
    if fmt == "csv":
        click.echo(lb.to_csv(results_dir), nl=False)
        return
    if fmt == "html":
        from eqbench.results.html import to_html

        click.echo(to_html(results_dir), nl=False)
        return
    print_leaderboard(results_dir)


def print_leaderboard(results_dir: Path) -> None:
    """The leaderboard as a rich table: tasks as rows, models as columns (a terminal fits a few
    models far better than twenty tasks)."""
    from eqbench.results import leaderboard as lb

    table_df = lb.formatted(results_dir)
    if table_df.empty:
        console.print(f"No results under {results_dir}. Run `eqbench eval` first.")
        return
    table = Table("task", title="eqbench leaderboard", title_justify="left")
    for model in table_df.index:
        table.add_column(str(model), justify="right", overflow="fold")
    for col in table_df.columns:
        table.add_row(col, *map(str, table_df[col].tolist()))
    console.print(table)


# -------------------------------------------------------------------------------------------- data
@main.group("data")
def data_group() -> None:
    """Generated datasets: write them to disk in standard layouts."""


@data_group.command("export")
@click.argument("dataset", type=click.Choice(["shapes"]))
@click.option(
    "--format", "fmt", type=click.Choice(["coco", "ade20k"]), default="coco", show_default=True
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to create.")
@click.option("--n-train", default=1000, show_default=True, type=int, help="Train scenes.")
@click.option("--n-val", default=200, show_default=True, type=int, help="Validation scenes.")
@click.option("--size", default=128, show_default=True, type=int, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Scene seed.")
def data_export_command(
    dataset: str, fmt: str, out: Path, n_train: int, n_val: int, size: int, seed: int
) -> None:
    """Write the built-in DATASET (shapes) in the COCO or ADE20K layout, to read back with
    --dataset coco:ROOT or ade20k:ROOT (or with mmdetection / mmsegmentation)."""
    from eqbench.data.export import ExportConfig, export_shapes

    cfg = ExportConfig(out=out, format=fmt, n_train=n_train, n_val=n_val, size=size, seed=seed)
    root = export_shapes(cfg)
    console.print(f"Wrote {dataset} ({n_train} train / {n_val} val, {size}px) as {fmt}: {root}")
    console.print(f"Evaluate on it with --dataset {fmt}:{root}")


# -------------------------------------------------------------------------------------------- demo
@main.command("demo")
@click.option(
    "--out",
    default="runs/demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the pretraining runs and the results.",
)
@click.option(
    "--models",
    default="vicreg,tir+vicreg,tir+vicreg-control",
    show_default=True,
    help="Comma-separated, from: "
    + ", ".join(DEMO_MODELS)
    + ". tir+vicreg-control is TIR's matched control (same rotated view and split, lambda = 0: "
    "no reconstruction); -k1/-k3 the K ablation; -lambda0.1/-lambda5 the reconstruction-weight "
    "sweep; rotation_supervised the probes' positive control.",
)
@click.option("--steps", default=200, show_default=True, type=int, help="Pretraining steps each.")
@click.option("--seed", default=0, show_default=True, type=int, help="Pretraining and data seed.")
@click.option(
    "--n-train", default=1000, show_default=True, type=int, help="Training pairs per probe."
)
@click.option("--n-test", default=500, show_default=True, type=int, help="Test pairs per probe.")
@click.option(
    "--feature",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "avgpool", "cls", "cls+avgpool", "grid"]),
    help="Global feature the probes read. auto (the task files' default too): the one each "
    "checkpoint's method trained (the mean patch token for VICReg and TIR, whose CLS token no "
    "loss touches); grid: the patch tokens pooled to 2x2 cells, flattened.",
)
@click.option(
    "--tasks", default="synthetic,classification/knn", show_default=True, help="Tasks to run."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-cache", is_flag=True, help="Do not use the on-disk feature cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo_command(
    out: Path,
    models: str,
    steps: int,
    seed: int,
    n_train: int,
    n_test: int,
    feature: str,
    tasks: str,
    device: str,
    no_cache: bool,
    quiet: bool,
) -> None:
    """The main job: pretrain VICReg, TIR+VICReg and TIR's matched control (lambda = 0) on the
    built-in photos (same seed and steps), evaluate them on the synthetic probes and kNN, and print
    the leaderboard.

    About fifteen minutes on two CPU cores. Re-running reuses finished runs and resumes interrupted
    ones; results go to OUT/results (`eqbench leaderboard --results-dir OUT/results`).
    """
    from eqbench.demo import DemoConfig, run_demo
    from eqbench.features.store import default_cache_dir

    cfg = DemoConfig(
        out=out,
        models=tuple(m.strip() for m in models.split(",") if m.strip()),
        steps=steps,
        seed=seed,
        tasks=tasks,
        n_train=n_train,
        n_test=n_test,
        feature=feature,
        device=device,
        cache_dir=None if no_cache else default_cache_dir(),
        show_progress=not quiet,
    )
    results = run_demo(cfg, announce=lambda msg: console.print(f"[bold]{msg}[/]"))
    print_leaderboard(results)


# ------------------------------------------------------------------------------------------ tables
@main.command("tables")
@click.option("--paper", required=True, help="wang2026 or gtsa.")
@click.option("--table", "number", required=True, help="Table number (e.g. 1).")
@click.option(
    "--format", "fmt", type=click.Choice(["md", "latex", "csv"]), default="md", show_default=True
)
@click.option(
    "--results-dir", default="results", show_default=True, type=click.Path(path_type=Path)
)
def tables_command(paper: str, number: str, fmt: str, results_dir: Path) -> None:
    """A seed paper's table in its own layout: the published rows, then the rows eqbench
    reproduced (from --results-dir), with the eqbench task behind each column."""
    from eqbench.tables.papers import render

    click.echo(render(paper, number, results_dir, fmt), nl=False)


# ------------------------------------------------------------------------------------ submit / zoo
def _format_help() -> str:
    from eqbench.checkpoints.formats import format_names

    return f"The checkpoint's format: auto (detected from its keys), {', '.join(format_names())}."


@main.command("submit")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--id", "card_id", required=True, help="Zoo id of the model (its card's name).")
@click.option(
    "--format",
    "fmt",
    cls=LazyHelpOption,
    help_fn=_format_help,
    default="auto",
    show_default=True,
)
@click.option("--arch", default=None, help="Backbone as a timm name (not for eqbench files).")
@click.option("--source", default="", help="Where the weights come from (URL, paper).")
@click.option("--licence", default="unknown", show_default=True, help="The weights' licence.")
@click.option("--suite", default=None, help="Tasks/groups to run after submitting (e.g. core).")
@click.option(
    "--results-dir", default="results", show_default=True, type=click.Path(path_type=Path)
)
@click.option("--force", is_flag=True, help="Replace an existing card with the same id.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a task option of the suite run (repeatable).",
)
@click.option(
    "--mean",
    type=(float, float, float),
    default=None,
    help="Input normalisation mean (default: the format's, e.g. ImageNet's for DINO).",
)
@click.option("--std", type=(float, float, float), default=None, help="With --mean.")
def submit_command(
    checkpoint: Path,
    card_id: str,
    fmt: str,
    arch: str | None,
    source: str,
    licence: str,
    suite: str | None,
    results_dir: Path,
    force: bool,
    sets: tuple[str, ...],
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
) -> None:
    """Add a third-party checkpoint to the model zoo (and optionally evaluate it).

    Loads CHECKPOINT safely (weights_only / safetensors), maps its keys onto the backbone,
    reports the keys it dropped (heads, decoders, the other branch) and fails on any other
    mismatch, then writes model_zoo/ID.yaml with its sha256. Afterwards `--checkpoint zoo:ID`
    works everywhere.

    \b
    Examples:
      eqbench submit dino_deitsmall16_pretrain.pth --format dino --arch vit_small_patch16_224 \\
          --id dino-vits16 --source https://github.com/facebookresearch/dino --suite core
      eqbench submit runs/tir/checkpoint.pt --id tir-demo
    """
    from eqbench.checkpoints.formats import FORMATS, format_names
    from eqbench.overrides import parse_overrides
    from eqbench.zoo.submit import submit

    if fmt not in ("auto", *format_names()):
        FORMATS.get(fmt)  # an unknown format: did-you-mean and the list, before any work
    done = submit(
        checkpoint,
        card_id=card_id,
        fmt=fmt,
        arch=arch,
        source=source,
        licence=licence,
        suite=suite,
        results_dir=results_dir,
        overwrite=force,
        eval_options={"overrides": parse_overrides(sets)} if sets else None,
        mean=mean,
        std=std,
    )
    card = done.card
    console.print(
        f"Wrote [bold]{done.path}[/] ({card.format}, {card.arch}, sha256 {card.sha256[:12]}...)"
    )
    if card.dropped_keys:
        console.print(f"Dropped {len(card.dropped_keys)} keys: {', '.join(card.dropped_keys)}")
    console.print(f"Normalisation: {card.preprocessing.get('source', 'unknown')}")
    if done.results:
        console.print(f"{len(done.results)} results under {results_dir}; `eqbench leaderboard`.")


@main.group("zoo")
def zoo_group() -> None:
    """The model zoo: cards of submitted checkpoints (model_zoo/*.yaml)."""


@zoo_group.command("ls")
def zoo_ls() -> None:
    """List the zoo's cards."""
    ls_command.callback("zoo")  # type: ignore[misc]


@zoo_group.command("show")
@click.argument("card_id")
def zoo_show(card_id: str) -> None:
    """Print a card."""
    from eqbench.zoo.cards import read_card

    click.echo(read_card(card_id).to_yaml(), nl=False)


@zoo_group.command("verify")
@click.argument("card_ids", nargs=-1)
def zoo_verify(card_ids: tuple[str, ...]) -> None:
    """Re-hash every card's weights and reload them strictly; exit 1 if any fails."""
    from eqbench.zoo.submit import verify

    verdicts = verify(list(card_ids) or None)
    if not verdicts:
        console.print("No zoo cards.")
        return
    for v in verdicts:
        mark = "[green]ok[/]" if v.ok else f"[red]FAILED[/]: {v.problem}"
        console.print(f"{v.card_id}: {mark}", highlight=False)
    if not all(v.ok for v in verdicts):
        sys.exit(1)


# ---------------------------------------------------------------------------------------- pretrain
from eqbench.train.cli import pretrain_command  # noqa: E402  (after the group it joins)

main.add_command(pretrain_command, "pretrain")


if __name__ == "__main__":  # pragma: no cover
    main()
