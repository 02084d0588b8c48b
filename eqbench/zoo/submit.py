"""``eqbench submit`` and ``eqbench zoo verify`` as library functions."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eqbench
from eqbench.checkpoints.spec import sha256_file
from eqbench.errors import CheckpointError, ConfigError
from eqbench.provenance import git_commit
from eqbench.zoo.cards import (
    ZooCard,
    card_ids,
    read_card,
    weights_path,
    writable_zoo_dir,
    write_card,
    zoo_dir,
)
from eqbench.zoo.load import load_foreign

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class Submission:
    """What :func:`submit` did.

    Attributes:
        card: the card written.
        path: where it was written.
        results: result JSONs written by the suite run (empty without ``suite``).
    """

    card: ZooCard
    path: Path
    results: list[Path] = field(default_factory=list)


def submit(
    checkpoint: str | Path,
    *,
    card_id: str,
    fmt: str = "auto",
    arch: str | None = None,
    source: str = "",
    licence: str = "unknown",
    suite: str | None = None,
    results_dir: Path = Path("results"),
    zoo: Path | None = None,
    overwrite: bool = False,
    eval_options: dict[str, Any] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Submission:
    """Check a third-party checkpoint, write its zoo card, and (optionally) run a suite on it.

    Nothing is written unless the checkpoint loads strictly into ``arch``.

    Args:
        checkpoint: the weight file.
        card_id: the zoo id (letters, digits, ``.``, ``_``, ``-``).
        fmt: a format of :data:`eqbench.checkpoints.formats.FORMATS`, ``eqbench`` or ``auto``.
        arch: the backbone (a timm name); read from the file for eqbench checkpoints.
        source: where the weights come from (URL, paper).
        licence: the weights' licence.
        suite: tasks or groups to evaluate afterwards (``core``), or ``None``.
        results_dir: where the suite's result JSONs go.
        zoo: the zoo folder (default :func:`eqbench.zoo.cards.zoo_dir`).
        overwrite: replace an existing card of the same id.
        eval_options: extra :class:`~eqbench.protocols.run.EvalConfig` fields for the suite run.
        mean: input normalisation mean, overriding the format's (ImageNet for DINO, iBOT, MAE,
            DINOv2, solo-learn, lightly; the architecture's timm default for ``timm``); with
            ``std``. The card records the values and where they came from.
        std: input normalisation std (with ``mean``).
    """
    if not _ID.fullmatch(card_id):  # fullmatch: '$' alone lets a final newline through
        raise ConfigError(
            f"Zoo id '{card_id}' is not allowed: use letters, digits, '.', '_' and '-' "
            "(at most 100 characters, not starting with a symbol)."
        )
    if (mean is None) != (std is None):
        raise ConfigError("Pass both --mean and --std (three values each), or neither.")
    zoo = writable_zoo_dir(zoo)
    planned = None
    if suite is not None:  # validate the suite before any work
        from eqbench.protocols.run import EvalConfig, plan

        planned = plan(
            EvalConfig(tasks=suite, checkpoint="baseline:pixels", **(eval_options or {}))
        )
    path = Path(checkpoint).expanduser()
    given = None if mean is None else {"mean": mean, "std": std, "source": "given by the user"}
    foreign = load_foreign(path, fmt, arch, normalization=given)
    if planned is not None:  # every task must take this backbone (patch size) before the card
        from eqbench.protocols.run import fit_tasks

        fit_tasks(planned, foreign.encoder)
    card = ZooCard(
        id=card_id,
        format=foreign.format,
        arch=foreign.arch,
        weights=str(path.resolve()),
        sha256=sha256_file(path),
        source=source,
        licence=licence,
        preprocessing={**foreign.preprocessing, "interpolation": "bilinear"},
        dropped_keys=foreign.dropped,
        notes={k: v for k, v in foreign.notes.items() if isinstance(v, str | int | float | list)},
        provenance={
            "submitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "eqbench_version": eqbench.__version__,
            "git_commit": git_commit(),
            "file_name": path.name,
        },
    )
    written = write_card(card, zoo, overwrite=overwrite)
    log.info("wrote %s (dropped %d keys)", written, len(card.dropped_keys))
    results: list[Path] = []
    if suite is not None:
        from eqbench.protocols.run import EvalConfig, evaluate

        cfg = EvalConfig(
            tasks=suite,
            checkpoint=f"zoo:{card_id}",
            results_dir=results_dir,
            **(eval_options or {}),
        )
        results = [p for _, p in evaluate(cfg)]
    return Submission(card, written, results)


@dataclass
class Verdict:
    """The outcome of verifying one card: ``ok``, or the problem found."""

    card_id: str
    ok: bool
    problem: str = ""


def verify(card_ids_: list[str] | None = None, zoo: Path | None = None) -> list[Verdict]:
    """Re-read every card (or the given ones), re-hash its file and reload it strictly."""
    folder = zoo or zoo_dir()
    verdicts = []
    for card_id in card_ids_ or card_ids(folder):
        try:
            card = read_card(card_id, folder)
            path = weights_path(card, folder)
            if not path.is_file():
                raise CheckpointError(f"weights file '{path}' is missing")
            sha = sha256_file(path)
            if sha != card.sha256:
                raise CheckpointError(f"sha256 {sha[:12]}... differs from the card's")
            foreign = load_foreign(
                path, card.format, None if card.format == "eqbench" else card.arch
            )
            if sorted(foreign.dropped) != sorted(card.dropped_keys):
                raise CheckpointError("the dropped keys differ from the card's")
            verdicts.append(Verdict(card_id, True))
        except CheckpointError as err:
            verdicts.append(Verdict(card_id, False, str(err)))
    return verdicts
