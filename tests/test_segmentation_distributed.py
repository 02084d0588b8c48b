"""``segmentation/linear`` under torchrun (DistributedDataParallel, the total batch kept) and its
resume after a kill (``--set work_dir=``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_eval_distributed import COUNTING_HOOK, _encoded, _metrics

from eqbench.cli import main
from eqbench.data.base import load_dataset
from eqbench.errors import ConfigError
from eqbench.protocols.segmentation.head import (
    HeadTraining,
    Resume,
    evaluate_head,
    train_linear_head,
)
from eqbench.train.distributed import DistContext, global_batch_share

#: A small run: 24 training images in global batches of 8 (4 per process on two), 16 test ones.
SETS = {
    "image_size": 32,
    "n_train": 24,
    "n_test": 16,
    "iterations": 30,
    "batch_size": 8,
    "lr": 0.05,
}
EVAL_ARGS = [
    *["eval", "-q", "-t", "segmentation/linear", "-c", "baseline:random:micro_vit"],
    *["--batch-size", "8"],  # 3 encoder batches per training split: 2 on one rank, 1 on the other
    *[arg for key, value in SETS.items() for arg in ("--set", f"{key}={value}")],
]

#: Installed in the subprocesses beside :data:`COUNTING_HOOK`: each rank saves its trained head
#: and the loss of every step to ``$HEAD_LOG_DIR/rank<RANK>.pt``.
HEAD_HOOK = """
import os

if os.environ.get("HEAD_LOG_DIR"):
    import torch
    import eqbench.protocols.segmentation as segmentation

    _train = segmentation.train_linear_head

    def _saving_train(*args, **kwargs):
        fit = _train(*args, **kwargs)
        out = os.path.join(os.environ["HEAD_LOG_DIR"], f"rank{os.environ.get('RANK', '0')}.pt")
        torch.save({"losses": fit.losses, "head": fit.head.state_dict()}, out)
        return fit

    segmentation.train_linear_head = _saving_train
"""

#: Two processes against one (gloo, OMP_NUM_THREADS=1): measured 2.4e-7 (loss) and 6.6e-7
#: (weights) over 30 steps, and equal metrics; the bounds leave a margin for other CPUs.
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-5
METRIC_TOLERANCE = 0.01


def _run(command: list[str], tmp: Path, name: str) -> tuple[Path, Path]:
    """Run ``command`` (the eqbench CLI) with its own results and logs of encoded images and
    trained heads."""
    hook = tmp / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(COUNTING_HOOK + HEAD_HOOK)
    encoded, heads = tmp / f"{name}-encoded", tmp / f"{name}-heads"
    encoded.mkdir()
    heads.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ENCODED_LOG_DIR": str(encoded),
        "HEAD_LOG_DIR": str(heads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    args = ["--cache-dir", str(tmp / f"{name}-cache"), "--results-dir", str(tmp / name)]
    done = subprocess.run(
        [*command, *EVAL_ARGS, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Results written under") == 1
    return encoded, heads


@pytest.mark.slow
def test_torchrun_two_processes_train_the_one_process_head(tmp_path: Path) -> None:
    one_encoded, one_heads = _run([sys.executable, "-m", "eqbench.cli"], tmp_path, "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two_encoded, two_heads = _run([*torchrun, "-m", "eqbench.cli"], tmp_path, "two")

    # one result, by rank 0
    single, ddp = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert list(ddp) == list(single) == ["segmentation/linear"]
    assert len(list((tmp_path / "two").rglob("*.json"))) == 1
    record, reference = ddp["segmentation/linear"], single["segmentation/linear"]
    assert record["environment"]["world_size"] == 2

    # every image encoded once, split over both processes
    one_seen, two_seen = _encoded(one_encoded), _encoded(two_encoded)
    assert list(two_seen) == ["rank0", "rank1"] and all(two_seen.values())
    assert two_seen["rank0"] + two_seen["rank1"] == one_seen["rank0"]
    assert sum(one_seen["rank0"].values()) == SETS["n_train"] + SETS["n_test"]

    # the same training up to the order of float sums: the gradient of each step is reduced
    # over two processes (and the BatchNorm statistics summed in float64) instead of in one
    # pass, so the losses and weights differ in the last bits, not more
    one = torch.load(one_heads / "rank0.pt")
    ranks = [torch.load(two_heads / f"rank{r}.pt") for r in (0, 1)]
    for key, value in ranks[0]["head"].items():  # DDP keeps the processes' heads identical
        assert torch.equal(value, ranks[1]["head"][key]), key
    assert torch.equal(ranks[0]["losses"], ranks[1]["losses"])
    loss_gap = (ranks[0]["losses"] - one["losses"]).abs().max().item()
    weight_gap = max(
        (ranks[0]["head"][k].double() - v.double()).abs().max().item()
        for k, v in one["head"].items()
        if v.is_floating_point()
    )
    metric_gap = max(
        abs(record["metrics"][name]["mean"] - value["mean"])
        for name, value in reference["metrics"].items()
    )
    print(f"max |2 - 1|: loss {loss_gap:.3g}, weight {weight_gap:.3g}, metric {metric_gap:.3g}")
    assert loss_gap < LOSS_TOLERANCE
    assert weight_gap < WEIGHT_TOLERANCE
    assert one["losses"][-1] < one["losses"][0]  # it trained
    # a pixel whose two best logits are within the weights' gap can flip its argmax: one pixel
    # of a 50-pixel class moves that class's IoU by 0.02, mIoU (6 classes) by about 0.003
    assert metric_gap < METRIC_TOLERANCE


def test_total_batch_must_split_evenly_over_the_processes() -> None:
    cpu = torch.device("cpu")
    assert global_batch_share(8, None, "head") == (0, 8)
    assert global_batch_share(8, DistContext(rank=1, world_size=2, device=cpu), "head") == (4, 8)
    with pytest.raises(ConfigError, match="batch of 8 images cannot be split evenly over the 3"):
        global_batch_share(8, DistContext(rank=0, world_size=3, device=cpu), "head")


class Killed(Exception):
    """Stands for the kill of a run in the middle of training."""


def _shapes(n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features that encode the (downsampled) masks of ``n`` shapes scenes, and the masks."""
    _, masks = load_dataset("shapes", split, n=n).load_pair(range(n), 32)  # type: ignore[attr-defined]
    one_hot = torch.nn.functional.one_hot(masks.long().clamp(max=5), 6).permute(0, 3, 1, 2)
    return torch.nn.functional.adaptive_avg_pool2d(one_hot.float(), 8), masks


def test_killed_training_resumes_bit_identically(tmp_path: Path) -> None:
    (x_tr, y_tr), (x_te, y_te) = _shapes(24, "train"), _shapes(12, "test")
    cpu, cfg = torch.device("cpu"), HeadTraining(iterations=23, batch_size=8, lr=0.05)
    whole = train_linear_head(x_tr, y_tr, 6, cfg, seed=3, device=cpu)

    resume = Resume(tmp_path / "state.pt", every=5, run_id="run-a")

    def kill_at_17(done: int) -> None:
        if done == 17:
            raise Killed

    with pytest.raises(Killed):
        train_linear_head(x_tr, y_tr, 6, cfg, seed=3, device=cpu, resume=resume, on_step=kill_at_17)
    assert torch.load(tmp_path / "state.pt")["step"] == 15  # the last checkpoint before the kill
    steps: list[int] = []
    resumed = train_linear_head(
        x_tr, y_tr, 6, cfg, seed=3, device=cpu, resume=resume, on_step=steps.append
    )
    assert steps == list(range(16, 24))  # resumed after step 15, not from the start
    assert torch.equal(resumed.losses, whole.losses)
    for key, value in whole.head.state_dict().items():
        assert torch.equal(resumed.head.state_dict()[key], value), key
    a, b = (evaluate_head(f.head, x_te, y_te, 6, cpu) for f in (whole, resumed))
    assert a == b

    with pytest.raises(ConfigError, match="another run"):
        other = Resume(tmp_path / "state.pt", every=5, run_id="run-b")
        train_linear_head(x_tr, y_tr, 6, cfg, seed=3, device=cpu, resume=other)


def test_work_dir_resumes_the_task(tmp_path: Path) -> None:
    """The second run with the same ``work_dir`` finds the finished head's state and scores it
    without training; its metrics are the first run's."""
    work = tmp_path / "work"
    args = [*EVAL_ARGS, "--set", f"work_dir={work}", "--set", "checkpoint_every=10"]
    records = []
    for name in ("first", "second"):
        done = CliRunner().invoke(main, [*args, "--results-dir", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
        records.append(_metrics(tmp_path / name)["segmentation/linear"])
    states = list(work.glob("segmentation_linear-*.pt"))
    assert len(states) == 1
    assert torch.load(states[0])["step"] == SETS["iterations"]
    assert records[0]["metrics"] == records[1]["metrics"]
    assert records[1]["config"]["work_dir"] == str(work)


#: Saves each rank's trained detector and losses to ``$HEAD_LOG_DIR/rank<RANK>.pt``.
DETECTOR_HOOK = """
import os

if os.environ.get("HEAD_LOG_DIR"):
    import torch
    import eqbench.protocols.detection as detection

    _train = detection.train_detector

    def _saving_train(model, *args, **kwargs):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        losses = _train(model, *args, **kwargs)
        out = os.path.join(os.environ["HEAD_LOG_DIR"], f"rank{os.environ.get('RANK', '0')}.pt")
        torch.save({"losses": losses, "before": before, "after": model.state_dict()}, out)
        return losses

    detection.train_detector = _saving_train
"""


@pytest.mark.slow
def test_torchrun_two_processes_train_one_detector(tmp_path: Path) -> None:
    """Mask R-CNN under DDP: the processes hold one detector, trained on the global batch, and
    rank 0 alone writes the result. Not compared with one process number for number: each
    process's losses are means over its own randomly sampled anchors and proposals."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DETECTOR_HOOK)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HEAD_LOG_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    sets = ["image_size=32", "n_train=4", "n_test=3", "iterations=3", "fpn_channels=16"]
    command = [
        *[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        *["-m", "eqbench.cli", "eval", "-q", "-t", "detection/maskrcnn"],
        *["-c", "baseline:random:micro_vit", "--no-cache", "--results-dir", str(tmp_path / "r")],
        *[arg for option in sets for arg in ("--set", option)],
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = _metrics(tmp_path / "r").values()
    assert record["environment"]["world_size"] == 2
    assert 0.0 <= record["metrics"]["box_ap"]["mean"] <= 1.0
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 3
    moved = 0
    for key, value in ranks[0]["after"].items():
        assert torch.equal(value, ranks[1]["after"][key]), key  # one detector
        moved += not torch.equal(value, ranks[0]["before"][key])
    assert moved > 0  # it trained
