"""``eqbench tables``: published rows as printed, reproduced rows from results/."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_results import record

from eqbench.cli import main
from eqbench.data import DATASETS
from eqbench.errors import ConfigError
from eqbench.protocols import PROTOCOLS
from eqbench.results.records import write_result
from eqbench.tables.papers import (
    DATA,
    TABLES,
    build,
    mapping_lines,
    published,
    render,
    reproduced,
    table_spec,
)
from eqbench.tasks import all_tasks


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("key", sorted(TABLES))
def test_published_rows_are_the_csv(key: tuple[str, str], tmp_path: Path) -> None:
    spec = table_spec(*key)
    _, pub = published(spec)
    body = [ln for ln in (DATA / spec.file).read_text().splitlines() if not ln.startswith("#")]
    assert len(pub) == len(body) - 1 > 0
    assert set(spec.columns) <= set(pub[0])  # every mapped column exists in the paper's table
    out = rows(render(*key, tmp_path / "none", "csv"))
    assert out[0][2:] == list(spec.columns)
    assert [r[0] for r in out[1:]] == ["published"] * len(pub)


def test_reproduced_rows_and_the_mean(tmp_path: Path) -> None:
    results = tmp_path / "results"
    values = {"rotation": 0.5, "colour": 0.25, "blur": 0.75, "translation": 0.1}
    for task, v in values.items():
        write_result(record("tir", f"synthetic/{task}", v), results)
    write_result(record("half", "synthetic/rotation", 0.9), results)
    write_result(record("other", "classification/knn", 0.9, metric="top1_k20"), results)
    spec = table_spec("wang2026", "1")
    got = {r["model"]: r for r in reproduced(spec, results)}
    assert set(got) == {"tir", "half"}  # "other" has none of the table's tasks
    assert got["tir"]["mean"] == pytest.approx(sum(values.values()) / 4)
    out = rows(render("wang2026", "1", results, "csv"))
    half = next(r for r in out if r[1] == "half")
    assert half[0] == "eqbench" and half[2] == "0.900" and half[3:] == ["—"] * 4
    md = render("wang2026", "1", results, "md")
    assert "| eqbench | tir | 0.500 | 0.250 | 0.750 | 0.100 | 0.400 |" in md
    assert "- rotation: synthetic/rotation" in md
    latex = render("wang2026", "1", results, "latex")
    assert latex.count(r"\\") == len(out) and r"\begin{tabular}" in latex


def test_columns_without_a_task_are_marked(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_result(record("m", "synthetic/rotation", 0.3), results)
    out = rows(render("wang2026", "1", results, "csv"))
    assert out[-1][1] == "m"
    t5 = render("wang2026", "5", results, "md")
    assert "aircraft: classification/linear on aircraft ×100" in t5
    assert "inat18: classification/linear_sgd on inat2018 ×100" in t5
    assert "imagenet: classification/linear_sgd on imagenet ×100" in t5
    assert "coco_map: n/a (no eqbench task)" in render("wang2026", "6", results, "md")


def test_table5_shows_linear_sgd_on_imagenet(tmp_path: Path) -> None:
    results = tmp_path / "results"
    rec = dataclasses.replace(
        record("m", "classification/linear_sgd", 0.8, metric="top1"), dataset="imagenet:/data/in1k"
    )
    write_result(rec, results)
    other = dataclasses.replace(
        record("m", "classification/linear", 0.5, metric="top1"), dataset="imagefolder:/x"
    )
    write_result(other, results)  # not ImageNet by name: no column takes it
    out = rows(render("wang2026", "5", results, "csv"))
    header, last = out[0], out[-1]
    assert last[header.index("imagenet")] == "80.000"
    assert last[header.index("cifar10")] == "—"


def test_unknown_paper_and_table() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'wang2026'"):
        table_spec("wang2025", "1")
    with pytest.raises(ConfigError, match="no table 2"):
        table_spec("wang2026", "2")
    result = CliRunner().invoke(main, ["tables", "--paper", "gtsa", "--table", "9"])
    assert result.exit_code == 2 and "no table 9" in result.output
    ok = CliRunner().invoke(main, ["tables", "--paper", "wang2026", "--table", "1"])
    assert ok.exit_code == 0 and "Ours(VICReg, all, SE(2))" in ok.output


@pytest.mark.parametrize("key", sorted(TABLES))
def test_every_column_names_a_real_task_metric_and_dataset(key: tuple[str, str]) -> None:
    """A column's task exists, reports the metric shown, reads a registered dataset, and the
    percent scale is used exactly for metrics stored as fractions."""
    tasks = all_tasks()
    spec = table_spec(*key)
    for name, column in spec.columns.items():
        if name in spec.means:  # computed from other columns
            continue
        if column.task is None:
            assert column.note, name
            continue
        task = tasks[column.task]
        protocol = PROTOCOLS.get(task.protocol)
        metric = column.metric or task.primary_metric
        assert metric in protocol.metrics, (name, metric)
        assert column.dataset is None or column.dataset in DATASETS.names(), name
        percent = protocol.units.get(metric) == "percent"
        published_in_percent = column.scale == 100.0
        assert not published_in_percent or percent, name


def test_gtsa_table_inat_columns_name_the_finetune_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = {line.split(":")[0]: line for line in mapping_lines(table_spec("gtsa", "1"))}
    assert lines["inat19_top1"].startswith(
        "inat19_top1: classification/finetune_inat2019 on inat2019"
    )
    assert "[top5]" in lines["inat19_top5"]
    records = [
        {
            "task": "classification/finetune_inat2019",
            "model_id": "m",
            "dataset": "inat2019:/data/inat",
            "primary_metric": "top1",
            "created_at": "2026-01-01T00:00:00",
            "metrics": {"top1": {"mean": 0.597}, "top5": {"mean": 0.857}},
        }
    ]
    import eqbench.tables.papers as papers

    monkeypatch.setattr(papers, "load_results", lambda _: records)
    tmp_path.joinpath("results").mkdir()
    _, _, rows = build("gtsa", "1", tmp_path / "results")
    row = dict(zip(rows[0], rows[-1], strict=True))
    assert row["inat19_top1"] == "59.700" and row["inat19_top5"] == "85.700"
