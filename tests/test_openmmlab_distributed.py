"""OpenMMLab tasks on several processes: mmengine's own distributed run under ``torchrun`` (gloo
on the CPU), the total batch kept, against the one-process run.

Skipped (with the reason) where OpenMMLab is not installed, failed where the run requires it
(``EQBENCH_REQUIRE``, tests/optional.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from optional import missing
from test_eval_distributed import _metrics

from eqbench.openmmlab import missing_openmmlab

missing("openmmlab", missing_openmmlab())

from eqbench.errors import ConfigError  # noqa: E402
from eqbench.openmmlab.runner import MEAN_BUFFERS_HOOK, distribute  # noqa: E402
from eqbench.openmmlab.segmentation import SegmentationData, segmentation_config  # noqa: E402
from eqbench.protocols.openmmlab import SegmentationFinetuneConfig  # noqa: E402
from eqbench.train.distributed import DistContext  # noqa: E402

#: 16 training scenes in total batches of 4 (2 per process on two), 30 steps; 8 test scenes.
SETS = {
    "iterations": 30,
    "n_train": 16,
    "n_test": 8,
    "batch_size": 4,
    "head_channels": 16,
    "lr": 0.003,
}
TASK = "segmentation/upernet"

#: Installed in the subprocesses: each rank writes what its mmengine Runner ran as to
#: ``$RUNNER_LOG_DIR/rank<RANK>.json`` once it has trained.
RUNNER_HOOK = """
import os

if os.environ.get("RUNNER_LOG_DIR"):
    import json
    from mmengine.runner import Runner

    _train = Runner.train

    def _logging_train(self):
        model = _train(self)
        batches = self.train_dataloader.batch_sampler  # mmdet's AspectRatioBatchSampler too
        sampler = batches.sampler
        info = {
            "launcher": self.launcher,
            "world_size": self.world_size,
            "wrapper": type(self.model).__name__,
            "batch_size": batches.batch_size,
            "sampler": [type(sampler).__name__, sampler.rank, sampler.world_size],
            "iterations": self.iter,
            "resumed": self._has_loaded,  # found a checkpoint in work_dir when training began
        }
        out = os.path.join(os.environ["RUNNER_LOG_DIR"], f"rank{os.environ.get('RANK', '0')}.json")
        with open(out, "w") as f:
            json.dump(info, f)
        return model

    Runner.train = _logging_train
"""

#: Not bit-identical: each process draws its own crops, flips, colour jitter and dropout from the
#: same seed for its half of every batch, and its BatchNorm layers normalise over that half
#: (averaged running statistics, no SyncBN on the CPU); the images of each step, the total batch
#: and the test predictions' gathering are the one-process run's. Measured (2 CPU cores,
#: OMP_NUM_THREADS=1): mAcc and aAcc 0.002 apart with the old BatchNorm pyramid, 0.049 and 0.053
#: (mIoU 0.009) with ViTDet's LayerNorm pyramid, while another --seed moves them by 0.05-0.15. So
#: this bound catches gross errors only (a rank on the wrong share, half the test set lost);
#: the exact world-size checks are the frozen-feature tasks' and segmentation/linear's.
METRIC_TOLERANCE = 0.08


def _run(
    command: list[str], tmp: Path, name: str, sets: dict[str, object] = SETS, task: str = TASK
) -> tuple[Path, float]:
    """Run ``eqbench eval`` of ``task`` through ``command``; its runner logs and seconds."""
    hook = tmp / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(RUNNER_HOOK)
    logs = tmp / f"{name}-runner"
    logs.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "RUNNER_LOG_DIR": str(logs),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    args = [
        *["eval", "-q", "-t", task, "-c", "baseline:random:micro_vit", "--no-cache"],
        *["--results-dir", str(tmp / name)],
        *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")],
    ]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "-m", "eqbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Results written under") == 1
    return logs, seconds


@pytest.mark.slow
def test_torchrun_two_processes_match_the_one_process_metrics(tmp_path: Path) -> None:
    one_logs, one_s = _run([sys.executable], tmp_path, "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two_logs, two_s = _run(torchrun, tmp_path, "two")

    # mmengine ran its own distributed run: the pytorch launcher, DDP, half the batch per rank
    one = json.loads((one_logs / "rank0.json").read_text())
    assert one["launcher"] == "none" and one["world_size"] == 1 and one["batch_size"] == 4
    for rank in (0, 1):
        info = json.loads((two_logs / f"rank{rank}.json").read_text())
        assert info["launcher"] == "pytorch" and info["world_size"] == 2
        assert info["wrapper"] == "MMDistributedDataParallel"
        assert info["batch_size"] == SETS["batch_size"] // 2
        assert info["sampler"] == ["InfiniteSampler", rank, 2]
        assert info["iterations"] == SETS["iterations"]

    # one result, by rank 0, recording the total batch; no folder left in the working directory
    single, ddp = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert list(ddp) == list(single) == [TASK]
    assert len(list((tmp_path / "two").rglob("*.json"))) == 1
    assert not (tmp_path / ".dist_test").exists()  # mmengine's default way to gather results
    record, reference = ddp[TASK], single[TASK]
    assert record["environment"]["world_size"] == 2
    assert record["config"]["batch_size"] == reference["config"]["batch_size"] == 4

    gaps = {
        name: abs(record["metrics"][name]["mean"] - value["mean"])
        for name, value in reference["metrics"].items()
    }
    print(f"|2 - 1| {gaps}; wall {one_s:.1f} s (1 process), {two_s:.1f} s (2 processes)")
    assert set(gaps) == {"miou", "macc", "aacc"}
    assert max(gaps.values()) < METRIC_TOLERANCE


@pytest.mark.slow
def test_torchrun_two_processes_resume_from_a_shared_work_dir(tmp_path: Path) -> None:
    """Rank 0 writes the checkpoints to ``work_dir``; a second launch finds the finished run
    there on every process, trains no more and scores the same model."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    work = tmp_path / "work"
    sets = {
        **SETS,
        "iterations": 4,
        "n_train": 8,
        "n_test": 4,
        "checkpoint_interval": 2,
        "work_dir": work,
    }
    logs = [_run(torchrun, tmp_path, name, sets)[0] for name in ("first", "second")]
    assert sorted(p.name for p in work.glob("*.pth")) == ["iter_4.pth"]  # max_keep_ckpts=1
    for rank in (0, 1):
        first, second = (json.loads((log / f"rank{rank}.json").read_text()) for log in logs)
        assert not first["resumed"] and second["resumed"]
        assert first["iterations"] == second["iterations"] == 4
    records = [_metrics(tmp_path / name)[TASK] for name in ("first", "second")]
    assert records[0]["metrics"] == records[1]["metrics"]


@pytest.mark.slow
def test_torchrun_two_processes_run_mask_rcnn(tmp_path: Path) -> None:
    """``detection/maskrcnn_mmdet`` the same way: an epoch-based run (``DefaultSampler``), box and
    mask AP from ``CocoMetric`` over both processes' detections, one result."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    sets = {"epochs": 1, "n_train": 4, "n_test": 2, "batch_size": 2, "image_size": 64}
    sets["neck_channels"] = 16
    logs, _ = _run(torchrun, tmp_path, "r", dict(sets), "detection/maskrcnn_mmdet")
    for rank in (0, 1):
        info = json.loads((logs / f"rank{rank}.json").read_text())
        assert info["launcher"] == "pytorch" and info["batch_size"] == 1
        assert info["sampler"] == ["DefaultSampler", rank, 2]
        assert info["iterations"] == 2  # 4 images in total batches of 2
    (record,) = _metrics(tmp_path / "r").values()
    assert record["environment"]["world_size"] == 2
    for name in ("bbox_map", "segm_map"):
        assert 0.0 <= record["metrics"][name]["mean"] <= 1.0


def _config() -> Any:
    data = SegmentationData(Path("unused"), ("a", "b"), 4, 2)
    cfg = SegmentationFinetuneConfig(batch_size=8)
    return segmentation_config(cfg, "baseline:random:micro_vit", 64, data, Path("work"), seed=0)


def test_distribute_splits_the_total_batch_and_wraps_for_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    config = _config()
    cpu = distribute(config, DistContext(rank=1, world_size=2, device=torch.device("cpu")))
    assert config.train_dataloader.batch_size == 8  # the one-process config is left alone
    assert cpu.train_dataloader.batch_size == 4
    assert cpu.launcher == "pytorch"
    assert cpu.model_wrapper_cfg["type"] == "MMDistributedDataParallel"
    assert cpu.model_wrapper_cfg["device_ids"] is None  # DDP of a CPU module
    assert "sync_bn" not in cpu and dict(type=MEAN_BUFFERS_HOOK) in cpu.custom_hooks
    assert cpu.test_evaluator.collect_device == "gpu"  # all_gather_object, not a folder

    cuda = distribute(config, DistContext(rank=0, world_size=4, device=torch.device("cuda", 0)))
    assert cuda.train_dataloader.batch_size == 2
    assert "device_ids" not in cuda.model_wrapper_cfg  # mmengine's [LOCAL_RANK]
    assert cuda.sync_bn == "torch"
    assert dict(type=MEAN_BUFFERS_HOOK) not in cuda.custom_hooks

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    slurm = distribute(config, DistContext(rank=0, world_size=2, device=torch.device("cpu")))
    assert slurm.launcher == "slurm"

    with pytest.raises(ConfigError, match="batch of 8 images cannot be split evenly over the 3"):
        distribute(config, DistContext(rank=0, world_size=3, device=torch.device("cpu")))
