"""``eqbench demo`` (the README's main job) and ``eqbench pretrain`` in the main CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from eqbench.cli import main
from eqbench.demo import DemoConfig, run_demo, run_dir
from eqbench.errors import ConfigError
from eqbench.results.leaderboard import leaderboard
from eqbench.results.records import load_results

#: The demo recipe shrunk to a micro ViT so that it runs in seconds.
MICRO = {
    "backbone": "micro_vit",
    "img_size": 32,
    "batch_size": 8,
    "device": "cpu",
    "method_options.expander_dims": [32, 32],
}


def micro_demo(out: Path, **kwargs: object) -> DemoConfig:
    options: dict = {
        "out": out,
        "steps": 2,
        "n_images": 16,
        "tasks": "synthetic/rotation,classification/knn",
        "n_train": 40,
        "n_test": 20,
        "device": "cpu",
        "pretrain_overrides": dict(MICRO),
        "eval_overrides": {"image_size": 32},
        "show_progress": False,
    }
    options.update(kwargs)
    return DemoConfig(**options)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_pretrains_tir_its_base_and_control_and_ranks_them(tmp_path: Path) -> None:
    cfg = micro_demo(tmp_path)
    folder = run_demo(cfg)
    for model in cfg.models:
        assert (run_dir(cfg, model) / "checkpoint.pt").is_file()
    records = load_results(folder)
    assert {(r["model_id"], r["task"]) for r in records} == {
        (f"{m}:2steps:seed0", t)
        for m in ("vicreg", "tir+vicreg", "tir+vicreg-control")
        for t in ("synthetic/rotation", "classification/knn")
    }
    # same seed, same budget: both runs saw the same number of steps and images
    means, _, _ = leaderboard(folder)
    assert sorted(means.index) == [
        "tir+vicreg-control:2steps:seed0",
        "tir+vicreg:2steps:seed0",
        "vicreg:2steps:seed0",
    ]
    assert means.notna().all().all()


def test_demo_reuses_finished_runs(tmp_path: Path) -> None:
    cfg = micro_demo(tmp_path, models=("vicreg",), tasks="classification/knn")
    run_demo(cfg)
    checkpoint = run_dir(cfg, "vicreg") / "checkpoint.pt"
    first = checkpoint.read_bytes()
    run_demo(cfg)
    assert checkpoint.read_bytes() == first  # reused: same weights, not retrained
    assert len(load_results(tmp_path / "results")) == 2


def test_demo_validates_before_pretraining(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'tir\\+vicreg'"):
        DemoConfig(out=tmp_path, models=("tir+vicrg",))
    with pytest.raises(ConfigError, match="steps"):
        DemoConfig(out=tmp_path, steps=0)
    cfg = micro_demo(tmp_path, tasks="synthetic/rotaton")
    with pytest.raises(ConfigError, match="synthetic/rotation"):
        run_demo(cfg)
    assert not (tmp_path / "runs").exists()  # nothing was pretrained


def test_demo_cli_bad_model_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--out", str(tmp_path), "--models", "vicreg,simsiam"]
    )
    assert result.exit_code == 2
    assert "Unknown demo model 'simsiam'" in result.output
    assert not any(tmp_path.iterdir())


def test_pretrain_is_a_main_command() -> None:
    result = CliRunner().invoke(main, ["pretrain", "--help"])
    assert result.exit_code == 0
    assert "tir+vicreg" in result.output and "vicreg_photos_cpu" in result.output
    result = CliRunner().invoke(main, ["pretrain", "-c", "vicreg_photo_cpu", "--out", "x"])
    assert result.exit_code == 2
    assert "Did you mean 'vicreg_photos_cpu'" in result.output
