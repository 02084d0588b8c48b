"""A pretraining run killed with SIGKILL and resumed ends bit for bit where an uninterrupted run
ends (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from eqbench.checkpoints import load_state_file

TINY: dict[str, Any] = {
    "method": "tir+vicreg",
    "backbone": "micro_vit",
    "img_size": 32,
    "dataset": "photos",
    "n_images": 12,  # batches straddle epochs: the kill lands mid-epoch
    "batch_size": 8,
    "steps": 40,
    "warmup_steps": 2,
    "grad_clip": 1.0,
    "checkpoint_every": 5,
    "log_every": 1,
    "device": "cpu",
    "tensorboard": False,
    "method_options": {"expander_dims": [32, 32]},
}


def cli(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "eqbench.cli",
        "pretrain",
        "--config",
        str(config),
        "--out",
        str(out),
        *extra,
    ]


def last_step(out: Path) -> int:
    log = out / "log.jsonl"
    if not log.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines() if line]
    return max(steps, default=0)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_for_bit(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    straight = subprocess.run(
        cli(config, tmp_path / "straight"), capture_output=True, text=True, env=env, timeout=300
    )
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        cli(config, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while last_step(out) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = load_state_file(out / "checkpoint.pt")[0]["train_state"]
    assert 5 <= saved["step"] < TINY["steps"]  # killed after a checkpoint, before the end

    resumed = subprocess.run(
        cli(config, out, "--resume"), capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = load_state_file(tmp_path / "straight" / "checkpoint.pt")[0]
    b = load_state_file(out / "checkpoint.pt")[0]
    assert a["train_state"]["step"] == b["train_state"]["step"] == TINY["steps"]
    assert a["backbone"].keys() == b["backbone"].keys()
    for key in a["backbone"]:
        assert torch.equal(a["backbone"][key], b["backbone"][key]), key
    for key in a["train_state"]["method_state"]:
        assert torch.equal(
            a["train_state"]["method_state"][key], b["train_state"]["method_state"][key]
        ), key
    # the log of the resumed run is the straight run's, step for step
    losses_a = [
        r["loss"]
        for r in map(json.loads, (tmp_path / "straight" / "log.jsonl").open())
        if "loss" in r
    ]
    losses_b = [r["loss"] for r in map(json.loads, (out / "log.jsonl").open()) if "loss" in r]
    assert losses_a == losses_b
