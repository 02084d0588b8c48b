"""Protocols declare each metric's unit and direction; the leaderboard reads them, not names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_results import record

from eqbench.errors import ConfigError
from eqbench.protocols import PROTOCOLS
from eqbench.protocols.base import UNITS, metric_higher_is_better, metric_unit
from eqbench.protocols.run import EvalConfig, plan
from eqbench.results.leaderboard import column_units, to_markdown
from eqbench.results.records import write_result
from eqbench.tasks import all_tasks


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_every_metric_has_a_known_unit(name: str) -> None:
    """Every registered protocol declares each metric's unit and direction (a new protocol is
    picked up from the registry)."""
    protocol = PROTOCOLS.get(name)
    assert set(protocol.units) == set(protocol.metrics), name
    assert set(protocol.units.values()) <= set(UNITS), name
    assert protocol.lower_is_better <= set(protocol.metrics), name
    for metric in protocol.metrics:
        assert metric_unit(name, metric) in UNITS
        assert metric_higher_is_better(name, metric) is (metric not in protocol.lower_is_better)


@pytest.mark.parametrize("task", sorted(all_tasks()))
def test_task_direction_agrees_with_its_protocol(task: str) -> None:
    spec = all_tasks()[task]
    lower = spec.primary_metric in PROTOCOLS.get(spec.protocol).lower_is_better
    assert spec.higher_is_better is not lower, task


def test_a_task_file_contradicting_its_protocol_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dense").mkdir()
    src = Path(__file__).resolve().parents[1] / "tasks" / "dense" / "homography.yaml"
    (tmp_path / "dense" / "homography.yaml").write_text(
        src.read_text().replace("higher_is_better: false", "higher_is_better: true")
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EQBENCH_TASKS_DIR", str(tmp_path))
        with pytest.raises(ConfigError, match="lower-is-better"):
            plan(EvalConfig(tasks="dense/homography", checkpoint="baseline:pixels"))


def test_leaderboard_shows_units_declared_by_the_protocol(tmp_path: Path) -> None:
    """A metric named like an accuracy but declared a plain score is not shown ×100, and the
    other way round: the unit, not the name, decides."""
    write_result(record("m1", "classification/knn", 0.875, metric="top1_k20"), tmp_path)
    write_result(record("m1", "synthetic/rotation", 0.25), tmp_path)
    units = column_units(tmp_path)
    assert units["classification/knn"] == "percent" and units["synthetic/rotation"] == "r2"
    md = to_markdown(tmp_path)
    assert "87.5" in md and "0.250" in md
    assert metric_unit("transform_prediction", "acc_mlp") == "percent"
    assert metric_unit("invariance", "cos_pair") == "score"
    assert metric_unit("no_such_protocol", "top1") == "score"  # an old result: shown plainly


def test_units_are_fields_not_guesses() -> None:
    """best_c (a selected C) and train_s (seconds) are not percentages although they sit beside
    accuracies; homography's errors are pixels, lower better."""
    assert metric_unit("linear", "best_c") == "value"
    assert metric_unit("maskrcnn", "train_s") == "s"
    assert PROTOCOLS.get("homography").lower_is_better == frozenset(
        PROTOCOLS.get("homography").metrics
    )


def test_records_without_declarations_take_them_from_their_task(tmp_path: Path) -> None:
    """Results written before records named their protocol or direction still read with the
    right unit and direction: looked up by task name, not guessed from the metric's name."""
    path = write_result(record("m1", "depth/linear", 0.5, metric="rmse"), tmp_path)
    data = json.loads(path.read_text())
    del data["protocol"], data["higher_is_better"]
    path.write_text(json.dumps(data))
    assert column_units(tmp_path)["depth/linear ↓"] == "m"
    assert metric_higher_is_better("depth_linear", "rmse") is False
    assert metric_higher_is_better("no_such_protocol", "rmse") is None
