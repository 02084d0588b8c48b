"""``feature: auto`` is every global-feature task's default: ``eqbench eval`` without ``--set
feature=`` reads the feature each eqbench checkpoint's method trained, and CLS for other models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_pretrain_methods import build

from eqbench.cli import main
from eqbench.methods import METHODS
from eqbench.protocols.run import EvalConfig, evaluate
from eqbench.results.records import load_results
from eqbench.tasks import resolve_tasks
from eqbench.train.state import save_training_checkpoint

SIZES = {"n_train": 24, "n_test": 12, "image_size": 32}


def test_every_global_feature_task_defaults_to_auto() -> None:
    tasks = resolve_tasks("synthetic,invariance,classification")
    reading = [t for t in tasks if "feature" in t.config]
    assert len(reading) == len(tasks) >= 18
    assert {t.name: t.config["feature"] for t in reading} == {t.name: "auto" for t in reading}


@pytest.mark.parametrize("name", METHODS.names())
def test_eval_reads_the_feature_each_method_trained(tmp_path: Path, name: str) -> None:
    method = build(name)
    path = tmp_path / "checkpoint.pt"
    optimizer = torch.optim.AdamW(method.parameters())
    save_training_checkpoint(
        path, method, optimizer, step=0, data_position=0, world_size=1, config={}, name=name
    )
    [(record, _)] = evaluate(
        EvalConfig(
            tasks="classification/knn",
            checkpoint=str(path),
            results_dir=tmp_path / "results",
            cache_dir=None,
            overrides=SIZES,  # no feature: the task file's default
            show_progress=False,
        )
    )
    assert record.config["feature"] == (method.trained_feature or "cls")
    assert "feature" not in record.overrides


@pytest.mark.parametrize("checkpoint", ["baseline:pixels", "baseline:random:micro_vit"])
def test_other_models_read_cls_through_the_cli(tmp_path: Path, checkpoint: str) -> None:
    results = tmp_path / "results"
    args = ["eval", "--task", "classification/knn", "--checkpoint", checkpoint, "--no-cache"]
    args += ["--results-dir", str(results)]
    for key, value in SIZES.items():
        args += ["--set", f"{key}={value}"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    [record] = load_results(results)
    assert record["config"]["feature"] == "cls"
