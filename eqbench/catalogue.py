"""What ``eqbench ls`` lists: rows for each registry and for the task files."""

from __future__ import annotations

Rows = list[tuple[str, ...]]


def listing(what: str) -> tuple[Rows, tuple[str, ...]]:
    """``(rows, headers)`` describing the registered ``what``."""
    if what == "tasks":
        from eqbench.tasks import all_tasks

        tasks = all_tasks()
        rows: Rows = [
            (t.name, f"v{t.version}", t.protocol, t.dataset, t.primary_metric, t.description)
            for t in tasks.values()
        ]
        return rows, ("task", "version", "protocol", "dataset", "primary", "description")
    if what == "groups":
        from eqbench.tasks import all_groups

        return [(g.name, ", ".join(g.members), g.description) for g in all_groups().values()], (
            "group",
            "members",
            "description",
        )
    if what == "datasets":
        from eqbench import data

        return [(n, data.DATASETS.describe(n)) for n in data.DATASETS], (
            "dataset",
            "description / layout",
        )
    if what == "backbones":
        from eqbench.backbones import BACKBONES

        return [(n, BACKBONES.describe(n)) for n in BACKBONES], ("backbone", "description")
    if what == "transforms":
        from eqbench.transforms import TRANSFORMS

        return [
            (n, ", ".join(TRANSFORMS.get(n).param_names), TRANSFORMS.describe(n))
            for n in TRANSFORMS
        ], ("transform", "parameters", "description")
    if what == "protocols":
        from eqbench.protocols import PROTOCOLS

        return [(n, PROTOCOLS.describe(n)) for n in PROTOCOLS], ("protocol", "description")
    if what == "methods":
        from eqbench.methods import METHODS
        from eqbench.train.config import configs_by_method

        shipped = configs_by_method()
        return [
            (n, e.paper, e.description, ", ".join(shipped.get(n, [])))
            for n, e in ((n, METHODS.get(n)) for n in METHODS)
        ], ("method", "paper", "description", "shipped configs")
    if what == "schemes":
        from eqbench.models import SCHEMES

        return [
            (f"{n}:", " | ".join(SCHEMES.get(n).forms), SCHEMES.get(n).help) for n in SCHEMES
        ], ("scheme", "forms", "loads")
    if what == "formats":
        from eqbench.checkpoints.formats import FORMATS

        formats: Rows = [("eqbench", "eqbench's own checkpoints (eqbench pretrain)")]
        formats += [(n, FORMATS.describe(n)) for n in FORMATS.names()]
        return formats, ("format", "description")
    if what == "zoo":
        from eqbench.errors import EqbenchError
        from eqbench.zoo.cards import card_ids, read_card

        cards: Rows = []
        for card_id in card_ids():
            try:
                c = read_card(card_id)
            except EqbenchError as err:
                cards.append((card_id, "", "", f"unreadable card: {err}"))
                continue
            cards.append((card_id, c.format, c.arch, c.source))
        return cards, ("id", "format", "arch", "source")
    raise ValueError(what)
