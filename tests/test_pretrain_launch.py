"""SLURM launch through submitit (its local executor) and the optional TensorBoard log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from optional import import_or_skip

from eqbench.cli import main
from eqbench.dataclass_dicts import from_dict
from eqbench.errors import ConfigError, EqbenchError
from eqbench.train import PretrainConfig, pretrain
from eqbench.train.launch import SlurmOptions, submit_pretrain

TINY: dict[str, Any] = {
    "method": "vicreg",
    "backbone": "micro_vit",
    "img_size": 32,
    "dataset": "photos",
    "n_images": 16,
    "batch_size": 8,
    "steps": 2,
    "warmup_steps": 1,
    "checkpoint_every": 2,
    "log_every": 1,
    "device": "cpu",
    "method_options": {"expander_dims": [32, 32]},
}


def tiny(**overrides: Any) -> PretrainConfig:
    return from_dict(PretrainConfig, {**TINY, **overrides}, "test config")


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_submitit_local_two_tasks_train_in_ddp(tmp_path: Path) -> None:
    out = tmp_path / "run"
    options = SlurmOptions(cluster="local", gpus_per_node=0, tasks_per_node=2, cpus_per_task=1)
    job = submit_pretrain(tiny(), out, options)
    results = job.results()  # one per task; raises if a task failed
    assert [Path(r) for r in results] == [out / "checkpoint.pt"] * 2
    start = next(r for r in records(out) if r.get("event") == "start")
    end = next(r for r in records(out) if r.get("event") == "end")
    assert start["world_size"] == 2
    hashes = end["param_sha256_per_rank"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert (out / "slurm").is_dir()  # submitit's scripts and logs


def test_submit_refuses_an_existing_run_and_bad_resources(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pretrain(tiny(steps=1, checkpoint_every=1), out)
    with pytest.raises(EqbenchError, match="--resume"):
        submit_pretrain(tiny(), out, SlurmOptions(cluster="local", gpus_per_node=0))
    with pytest.raises(ConfigError, match="does not split"):
        submit_pretrain(
            tiny(batch_size=6), tmp_path / "b", SlurmOptions(cluster="local", gpus_per_node=4)
        )
    with pytest.raises(ConfigError, match="Unknown cluster"):
        SlurmOptions(cluster="pbs")


def test_cli_submit_local_waits_for_the_checkpoint(tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    args = ["pretrain", "-c", str(config), "--out", str(out), "--submit", "local"]
    result = CliRunner().invoke(main, [*args, "--gpus-per-node", "0", "--cpus-per-task", "1"])
    assert result.exit_code == 0, result.output
    assert "Submitted job" in result.output and "Checkpoint:" in result.output
    assert (out / "checkpoint.pt").is_file()


def test_tensorboard_events_mirror_the_log(tmp_path: Path) -> None:
    import_or_skip("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    pretrain(tiny(), out)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    logged = [(r["step"], r["loss"]) for r in records(out) if "loss" in r]
    assert [s for s, _ in losses] == [s for s, _ in logged] == [1, 2]
    assert [v for _, v in losses] == pytest.approx([v for _, v in logged], rel=1e-6)
    pretrain(tiny(tensorboard=False), tmp_path / "off")
    assert not (tmp_path / "off" / "tensorboard").exists()
