"""dinov2's linear protocol (eqbench.protocols.classification.linear_sgd, task
classification/linear_sgd)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import Tensor, nn

from eqbench.cli import main
from eqbench.protocols.classification.linear_sgd import (
    DINOV2_LEARNING_RATES,
    HeadSpec,
    head_grid,
    linear_input,
    linear_sgd_probe,
    train_heads,
)

GRID = head_grid([1, 2], [False, True], (0.01, 0.1, 1.0))


def _toy(
    n: int, n_classes: int, spread: float, seed: int, dim: int = 8
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Clustered features as ``(cls_blocks (n, 2, dim), avgpool (n, dim), labels)``: only the
    last block's CLS token carries the class."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * 3.0
    y = rng.integers(0, n_classes, n)
    last = centres[y] + spread * rng.standard_normal((n, dim))
    noise = rng.standard_normal((n, dim))
    blocks = torch.tensor(np.stack([noise, last], axis=1), dtype=torch.float32)
    avg = torch.tensor(rng.standard_normal((n, dim)), dtype=torch.float32)
    return blocks, avg, y


def test_linear_input_is_dinov2s() -> None:
    blocks = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)  # (N, B, D)
    avg = torch.full((2, 2), -1.0)
    assert linear_input(blocks, avg, 1, False).tolist() == [[4, 5], [10, 11]]
    assert linear_input(blocks, avg, 2, True).tolist() == [
        [2, 3, 4, 5, -1, -1],
        [8, 9, 10, 11, -1, -1],
    ]


def test_grid_order_and_names() -> None:
    grid = head_grid([1, 4], [False, True], DINOV2_LEARNING_RATES)
    assert (
        len(grid) == 52
        and grid[0] == HeadSpec(1, False, 1e-5)
        and grid[-1] == HeadSpec(4, True, 0.1)
    )
    assert grid[-1].name(128) == "classifier_4_blocks_avgpool_True_lr_0_05000"


def test_stacked_sgd_matches_torch_optim_per_head() -> None:
    """The stacked update equals one nn.Linear per head under torch.optim.SGD(momentum=0.9) and
    CosineAnnealingLR, as dinov2 trains them (linear.py L517-519)."""
    blocks, avg, y = _toy(40, 3, 1.0, seed=0, dim=4)
    heads = head_grid([1, 2], [False, True], (0.05, 0.5))
    inputs = {(n, p): linear_input(blocks, avg, n, p) for n in (1, 2) for p in (False, True)}
    labels = torch.as_tensor(y)
    stacks, steps = train_heads(inputs, labels, heads, 3, epochs=3, batch_size=16, seed=7)
    assert steps == 3 * 2  # 40 // 16 batches an epoch, the last incomplete one dropped

    generator = torch.Generator().manual_seed(7)  # the same draws, in the same order
    layers: list[nn.Linear] = [None] * len(heads)  # type: ignore[list-item]
    for key in dict.fromkeys((h.n_blocks, h.avgpool) for h in heads):
        index = [i for i, h in enumerate(heads) if (h.n_blocks, h.avgpool) == key]
        w = torch.empty(len(index), inputs[key].shape[1], 3).normal_(0.0, 0.01, generator=generator)
        for j, i in enumerate(index):
            layers[i] = nn.Linear(inputs[key].shape[1], 3)
            with torch.no_grad():
                layers[i].weight.copy_(w[j].T)
                layers[i].bias.zero_()
    groups = [
        {"params": layer.parameters(), "lr": h.lr * 16 / 256}
        for h, layer in zip(heads, layers, strict=True)
    ]
    opt = torch.optim.SGD(groups, momentum=0.9, weight_decay=0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0)
    for _ in range(3):
        order = torch.randperm(40, generator=generator)
        for k in range(2):
            idx = order[k * 16 : (k + 1) * 16]
            loss = sum(
                nn.CrossEntropyLoss()(layer(inputs[(h.n_blocks, h.avgpool)][idx]), labels[idx])
                for h, layer in zip(heads, layers, strict=True)
            )
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
    for stack in stacks:
        for j, i in enumerate(stack.index):
            torch.testing.assert_close(
                stack.weight[:, j].T, layers[i].weight.detach(), rtol=1e-4, atol=1e-6
            )
            torch.testing.assert_close(stack.bias[j], layers[i].bias.detach(), rtol=1e-4, atol=1e-6)


def test_oracle_separable_toy_reaches_full_accuracy() -> None:
    blocks, avg, y = _toy(700, 5, 0.3, seed=1)
    res = linear_sgd_probe(
        blocks[:500], avg[:500], y[:500], blocks[500:], avg[500:], y[500:],
        num_classes=5, heads=GRID, epochs=30, batch_size=64, val_fraction=0.2, seed=0,
    )  # fmt: skip
    assert res.top1 >= 0.99 and res.val_top1 >= 0.99
    assert res.val_top1 == max(res.val_scores)
    assert res.val_scores.index(res.val_top1) == res.heads.index(res.head)  # first best wins


def test_test_labels_never_influence_selection() -> None:
    """Poisoning the test labels (and features) moves the test score only."""
    blocks, avg, y = _toy(600, 4, 2.5, seed=2)
    kwargs = dict(num_classes=4, heads=GRID, epochs=5, batch_size=64, val_fraction=0.25, seed=3)
    clean = linear_sgd_probe(
        blocks[:400], avg[:400], y[:400], blocks[400:], avg[400:], y[400:], **kwargs
    )  # type: ignore[arg-type]
    poisoned_y = (y[400:] + 1) % 4  # every test label wrong for a perfect head
    poisoned = linear_sgd_probe(
        blocks[:400],
        avg[:400],
        y[:400],
        -blocks[400:],
        avg[400:] * 5,
        poisoned_y,
        **kwargs,  # type: ignore[arg-type]
    )
    assert poisoned.head == clean.head
    assert poisoned.val_scores == clean.val_scores
    assert poisoned.top1 != clean.top1


def test_cli_run_writes_a_result_the_leaderboard_shows(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["eval", "-t", "classification/linear_sgd", "-c", "baseline:random:micro_vit", "-q"]
    args += ["--results-dir", str(results), "--no-cache", "--set", "image_size=32"]
    args += ["--set", "n_train=80", "--set", "n_test=40", "--set", "epochs=2"]
    args += ["--set", "learning_rates=[0.01,0.1]"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (file,) = results.rglob("*.json")
    record = json.loads(file.read_text())
    metrics = {k: v["mean"] for k, v in record["metrics"].items()}
    assert record["task"] == "classification/linear_sgd" and record["dataset"] == "digits"
    assert 0 <= metrics["top1"] <= 1 and metrics["best_lr"] in (0.01, 0.1)
    assert metrics["best_n_last_blocks"] in (1, 2) and metrics["best_avgpool"] in (0, 1)
    # micro_vit has 2 blocks: the grid's 4 became 2, and the result says so
    assert record["adjustments"]["n_last_blocks"]["used"] == [1, 2]
    board = CliRunner().invoke(
        main, ["leaderboard", "--results-dir", str(results), "--format", "md"]
    )
    assert board.exit_code == 0
    assert "classification/linear_sgd" in board.output
    assert f"{100 * metrics['top1']:.1f}" in board.output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("epochs=0", "epochs and batch_size must be >= 1"),
        ("learning_rates=[]", "learning_rates must be positive"),
        ("n_last_blocks=[1,1]", "n_last_blocks has repeats"),
        ("avgpool=[true,true]", "avgpool must list"),
        ("val_fraction=1.5", "val_fraction must lie in"),
    ],
)
def test_bad_options_fail_before_compute(option: str, message: str, tmp_path: Path) -> None:
    args = ["eval", "-t", "classification/linear_sgd", "-c", "baseline:pixels", "-q"]
    args += ["--results-dir", str(tmp_path / "r"), "--set", option]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
