"""Result records and the leaderboard built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eqbench.atomic import write_json
from eqbench.results.leaderboard import leaderboard, to_csv, to_markdown
from eqbench.results.records import ResultRecord, load_results, summarise, write_result
from eqbench.tasks import all_tasks

TASKS = all_tasks()


def record(
    model: str,
    task: str,
    mean: float,
    *,
    version: int = 1,
    seed: int = 0,
    created: str = "2026-01-01T00:00:00+00:00",
    metric: str = "r2_mlp",
    feature: str | None = None,
) -> ResultRecord:
    return ResultRecord(
        task=task,
        task_version=version,
        # the task's own protocol (its metrics' units); a made-up task reads as a probe
        protocol=TASKS[task].protocol if task in TASKS else "transform_prediction",
        model_id=model,
        checkpoint=model,
        checkpoint_sha256="0" * 64,
        dataset="photos",
        dataset_fingerprint={},
        metrics={metric: {"mean": mean, "std": 0.01, "values": [mean]}},
        primary_metric=metric,
        higher_is_better=True,
        seed=seed,
        probe_seeds=[seed],
        config={} if feature is None else {"feature": feature},
        overrides={},
        environment={},
        wall_time_s=1.0,
        created_at=created,
    )


def test_summarise() -> None:
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx((2 / 3) ** 0.5)


def test_write_and_load_roundtrip(tmp_path: Path) -> None:
    path = write_result(record("baseline:pixels", "synthetic/rotation", 0.5), tmp_path)
    assert path.is_file() and "baseline_pixels" in str(path) and "synthetic__rotation" in str(path)
    loaded = load_results(tmp_path)
    assert len(loaded) == 1 and loaded[0]["metrics"]["r2_mlp"]["mean"] == 0.5
    assert not list(tmp_path.rglob("*.tmp"))


def test_invalid_json_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text("{not json")
    write_json(tmp_path / "other.json", {"hello": 1})
    assert load_results(tmp_path) == []


def test_leaderboard_newest_per_seed_mean_over_seeds_and_versions_apart(tmp_path: Path) -> None:
    write_result(
        record("m1", "synthetic/rotation", 0.1, created="2026-01-01T00:00:00+00:00"), tmp_path
    )
    write_result(
        record("m1", "synthetic/rotation", 0.3, created="2026-01-02T00:00:00+00:00"), tmp_path
    )
    write_result(record("m1", "synthetic/rotation", 0.5, seed=1), tmp_path)
    write_result(record("m2", "synthetic/rotation", 0.9, version=2), tmp_path)
    means, stds, metrics = leaderboard(tmp_path)
    assert set(means.columns) >= {"synthetic/rotation v1", "synthetic/rotation v2"}
    assert means.loc["m1", "synthetic/rotation v1"] == pytest.approx(0.4)  # newest 0.3, and 0.5
    assert stds.loc["m1", "synthetic/rotation v1"] == pytest.approx(pd.Series([0.3, 0.5]).std())
    assert pd.isna(means.loc["m1", "synthetic/rotation v2"])
    assert means.loc["m2", "synthetic/rotation v2"] == pytest.approx(0.9)
    assert metrics["synthetic/rotation v1"] == "r2_mlp"


def test_leaderboard_formats(tmp_path: Path) -> None:
    write_result(record("m1", "synthetic/rotation", 0.25), tmp_path)
    write_result(record("m1", "classification/knn", 0.875, metric="top1_k20"), tmp_path)
    md = to_markdown(tmp_path)
    assert "| m1 |" in md and "87.5" in md and "0.250" in md
    assert "mean R² (synthetic)" in md
    rows = to_csv(tmp_path).strip().splitlines()
    assert rows[0] == "model,column,metric,feature,mean,std"
    assert any(r.startswith("m1,classification/knn,top1_k20,,0.875") for r in rows)
    data = json.loads(json.dumps(load_results(tmp_path)[0]))
    assert data["schema_version"] == 1


def test_a_cell_never_mixes_features_and_mixed_columns_name_them(tmp_path: Path) -> None:
    from eqbench.results.leaderboard import formatted

    write_result(record("dino", "synthetic/rotation", 0.25, feature="cls"), tmp_path)
    write_result(record("tir", "synthetic/rotation", 0.5, feature="avgpool"), tmp_path)
    table = formatted(tmp_path)
    assert table.loc["dino", "synthetic/rotation"] == "0.250 ± 0.010 (cls)"
    assert table.loc["tir", "synthetic/rotation"] == "0.500 ± 0.010 (avgpool)"
    assert "top1_k20" not in to_csv(tmp_path)
    assert "synthetic/rotation,r2_mlp,avgpool,0.5" in to_csv(tmp_path)
    # one model read two features for one column: the column splits by feature
    write_result(record("tir", "synthetic/rotation", 0.75, seed=1, feature="grid"), tmp_path)
    means, _, _ = leaderboard(tmp_path)
    assert means.loc["tir", "synthetic/rotation {feature=avgpool}"] == pytest.approx(0.5)
    assert means.loc["tir", "synthetic/rotation {feature=grid}"] == pytest.approx(0.75)
    assert "synthetic/rotation" not in means.columns
    # one feature for every model: the cells stay plain
    other = tmp_path / "same"
    write_result(record("a", "synthetic/rotation", 0.25, feature="cls"), other)
    write_result(record("b", "synthetic/rotation", 0.5, feature="cls"), other)
    assert formatted(other).loc["a", "synthetic/rotation"] == "0.250 ± 0.010"
