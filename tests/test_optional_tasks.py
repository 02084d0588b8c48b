"""Tasks with optional dependencies (the OpenMMLab engines): validated without them, skipped
with a message naming the install command when they are missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from eqbench.cli import main
from eqbench.errors import MissingDependencyError
from eqbench.openmmlab import missing_openmmlab, require_openmmlab
from eqbench.protocols.openmmlab import DetectionMmdet, SegmentationFinetune
from eqbench.protocols.run import EvalConfig, evaluate, plan

OPENMMLAB_TASKS = "segmentation/upernet,segmentation/semfpn,detection/maskrcnn_mmdet"


def _without_openmmlab(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.split(".")[0] in {"mmcv", "mmseg"} else real(name, *a),
    )


def test_task_files_validate_without_openmmlab() -> None:
    planned = plan(EvalConfig(tasks="openmmlab", checkpoint="baseline:pixels"))
    assert [p.spec.name for p in planned] == OPENMMLAB_TASKS.split(",")
    assert planned[0].config.head == "upernet" and planned[1].config.head == "semfpn"


def test_missing_openmmlab_names_the_build_script(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_openmmlab(monkeypatch)
    reason = missing_openmmlab()
    assert reason is not None and "scripts/build_mmcv.sh" in reason and "mmcv" in reason
    with pytest.raises(MissingDependencyError, match=r"build_mmcv\.sh"):
        require_openmmlab()


def test_eval_skips_openmmlab_tasks_when_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for protocol in (SegmentationFinetune, DetectionMmdet):
        monkeypatch.setattr(protocol, "unavailable", classmethod(lambda cls: "not here; run X"))
    skipped: list[str] = []
    cfg = EvalConfig(
        tasks=OPENMMLAB_TASKS,
        checkpoint="baseline:pixels",
        results_dir=tmp_path,
        on_skip=lambda task, reason: skipped.append(f"{task}: {reason}"),
    )
    assert evaluate(cfg) == []
    assert skipped == [f"{t}: not here; run X" for t in OPENMMLAB_TASKS.split(",")]
    assert not any(tmp_path.iterdir())
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--task",
            "segmentation/upernet",
            "--checkpoint",
            "baseline:pixels",
            "--results-dir",
            str(tmp_path),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Skipped segmentation/upernet" in result.output and "no result written" in result.output


def test_engine_modules_fail_with_the_remedy_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    _without_openmmlab(monkeypatch)
    monkeypatch.delitem(sys.modules, "eqbench.openmmlab.backbone", raising=False)
    with pytest.raises(MissingDependencyError, match=r"build_mmcv\.sh"):
        importlib.import_module("eqbench.openmmlab.backbone")
