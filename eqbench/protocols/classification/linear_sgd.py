"""DINOv2's linear protocol on frozen features: a grid of linear heads trained at once with SGD.

After facebookresearch/dinov2 ``dinov2/eval/linear.py`` (commit b8931f7):

* one linear head per (``n_last_blocks``, ``avgpool``, learning rate) (``setup_linear_classifiers``,
  L235-256; grid n ∈ {1, 4}, L503), whose input is the CLS tokens of the ``n`` last blocks,
  concatenated, followed with ``avgpool`` by the mean patch token of the last block
  (``create_linear_input``, L171-183);
* each head a linear layer with weights ~ N(0, 0.01²) and zero bias (``LinearClassifier``,
  L195-197), learning rate scaled by ``batch_size / 256`` (``scale_lr``, L231-232) from the
  grid ``[1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]`` (L145);
* all heads trained together on the sum of their cross-entropy losses (L355-356) with SGD,
  momentum 0.9, no weight decay (L517), cosine-annealed to 0 over all iterations (L519),
  shuffled batches with the last incomplete one dropped (L526-530);
* the head with the best top-1 on the validation set wins, the first one in grid order among
  ties (``evaluate_linear_classifiers``, L291-297), and its top-1 on the test set is reported
  (``test_on_datasets``, L429-460).

Differences, on purpose: dinov2 validates on ImageNet's val set, which is also what it reports;
here the validation set is carved from the training split (stratified, seeded,
:func:`eqbench.protocols.classification.linear.split_train_val`) and the test split is only ever
scored by the chosen head. The heads read cached features of centre crops, so dinov2's training
augmentation (``RandomResizedCrop`` + flip, ``dinov2/data/transforms.py``) is not applied: the
frozen features of each image are computed once. Training runs over ``epochs`` passes of the fit
part instead of dinov2's fixed 10 × 1250 iterations.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from eqbench.protocols.classification.linear import split_train_val, topk_accuracy

logger = logging.getLogger(__name__)

#: dinov2 ``linear.py`` L145: the learning rates searched (before scaling by batch / 256).
DINOV2_LEARNING_RATES: tuple[float, ...] = (
    1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
)  # fmt: skip
#: dinov2 ``linear.py`` L503.
DINOV2_N_LAST_BLOCKS: tuple[int, ...] = (1, 4)
MOMENTUM = 0.9
#: Multiply-adds per SGD step (batch × weights) under which training runs on one thread.
SINGLE_THREAD_WORK = 1 << 24


@dataclass(frozen=True)
class HeadSpec:
    """One linear head of the grid.

    Attributes:
        n_blocks: CLS tokens of this many last blocks enter the head.
        avgpool: the last block's mean patch token is appended.
        lr: base learning rate (the grid's value, before scaling by ``batch_size / 256``).
    """

    n_blocks: int
    avgpool: bool
    lr: float

    def name(self, batch_size: int) -> str:
        """dinov2's classifier name (``linear.py`` L247-249), with the scaled learning rate."""
        scaled = self.lr * batch_size / 256.0
        return f"classifier_{self.n_blocks}_blocks_avgpool_{self.avgpool}_lr_{scaled:.5f}".replace(
            ".", "_"
        )


@dataclass(frozen=True)
class SgdProbeResult:
    """What :func:`linear_sgd_probe` measured.

    Attributes:
        head: the head selected on the validation set.
        val_top1: its validation top-1 (fraction 0–1).
        top1: its test top-1.
        top5: its test top-5 (with fewer than five classes every class counts).
        val_scores: validation top-1 of every head, in grid order.
        heads: the grid, in dinov2's order (n, then avgpool off/on, then learning rate).
        iterations: SGD steps taken.
    """

    head: HeadSpec
    val_top1: float
    top1: float
    top5: float
    val_scores: tuple[float, ...]
    heads: tuple[HeadSpec, ...]
    iterations: int


def head_grid(
    n_last_blocks: Sequence[int], avgpool: Sequence[bool], learning_rates: Sequence[float]
) -> tuple[HeadSpec, ...]:
    """The heads in dinov2's order (``setup_linear_classifiers``, L238-240)."""
    return tuple(
        HeadSpec(n, pool, float(lr))
        for n in n_last_blocks
        for pool in avgpool
        for lr in learning_rates
    )


def linear_input(cls_blocks: Tensor, avgpool: Tensor, n_blocks: int, use_avgpool: bool) -> Tensor:
    """A head's input (dinov2 ``create_linear_input``, L171-183).

    Args:
        cls_blocks: ``(N, B, D)`` CLS tokens of the ``B`` last blocks, last block last.
        avgpool: ``(N, D)`` mean patch token of the last block.
        n_blocks: how many last blocks to use, ``<= B``.
        use_avgpool: append ``avgpool``.

    Returns:
        ``(N, n_blocks·D [+ D])`` float32.
    """
    out = cls_blocks[:, -n_blocks:].flatten(1)  # (N, n·D), blocks in order
    if use_avgpool:
        out = torch.cat([out, avgpool], dim=1)
    return out.float()


@dataclass
class HeadStack:
    """The heads that share one input, as stacked weights: logits = x @ weight[h] + bias[h].

    Attributes:
        key: ``(n_blocks, avgpool)`` of the shared input.
        index: positions of these heads in the grid.
        weight: ``(d, H, C)`` (one matrix product serves every head).
        bias: ``(H, C)``.
        lr: ``(H,)`` scaled learning rates.
    """

    key: tuple[int, bool]
    index: list[int]
    weight: Tensor
    bias: Tensor
    lr: Tensor

    def forward(self, x: Tensor) -> Tensor:
        """``(N, H, C)`` logits of every head for inputs ``x`` ``(N, d)``."""
        dim, heads, classes = self.weight.shape
        flat = x @ self.weight.reshape(dim, heads * classes)  # (N, H·C)
        return flat.view(-1, heads, classes) + self.bias

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """:meth:`forward` without gradients."""
        return self.forward(x)


def train_heads(
    inputs: dict[tuple[int, bool], Tensor],
    labels: Tensor,
    heads: Sequence[HeadSpec],
    num_classes: int,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[list[HeadStack], int]:
    """Train every head at once on its input (dinov2 ``eval_linear``, L342-364).

    Heads that read the same input are one stacked tensor, and SGD runs on the stack with a
    learning rate per head: the update torch.optim.SGD makes per parameter group (momentum 0.9,
    dampening 0, no Nesterov, no weight decay: ``buf = 0.9 · buf + grad``, ``p -= lr · buf``)
    with the closed form of ``CosineAnnealingLR(T_max = steps, eta_min = 0)``,
    ``lr_t = lr · (1 + cos(π t / T)) / 2``. Summing the heads' mean losses (L355-356) gives each
    head the gradient of its own loss, so the heads train independently, as dinov2's do.

    Args:
        inputs: ``(n_blocks, avgpool) -> (N, d)`` features of the fit part.
        labels: ``(N,)`` int64.
        heads: the grid.
        num_classes: output width.
        epochs: passes over the fit part.
        batch_size: samples per step (the last incomplete batch is dropped, L530; a fit part
            smaller than a batch is one batch, and the learning rates scale with its size).
        seed: seeds the weight initialisation and the shuffling.

    Returns:
        The trained head stacks and the number of SGD steps.
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    batch = min(batch_size, n)
    steps_per_epoch = n // batch
    max_iter = epochs * steps_per_epoch
    stacks = []
    for key in dict.fromkeys((h.n_blocks, h.avgpool) for h in heads):
        index = [i for i, h in enumerate(heads) if (h.n_blocks, h.avgpool) == key]
        dim = inputs[key].shape[1]
        weight = torch.empty(len(index), dim, num_classes).normal_(0.0, 0.01, generator=generator)
        weight = weight.permute(1, 0, 2).contiguous()  # (d, H, C), drawn head by head
        stacks.append(
            HeadStack(
                key=key,
                index=index,
                weight=weight.requires_grad_(),  # L196: N(0, 0.01²)
                bias=torch.zeros(len(index), num_classes, requires_grad=True),  # L197
                lr=torch.tensor([heads[i].lr * batch / 256.0 for i in index]),  # L231-232
            )
        )
    # Steps this small lose to thread hand-offs (on 2 busy cores 10-50x slower than one
    # thread); larger ones keep PyTorch's threads.
    work = max(batch * st.weight.numel() for st in stacks)
    threads = torch.get_num_threads()
    if work < SINGLE_THREAD_WORK:
        torch.set_num_threads(1)
    try:
        _sgd_loop(stacks, inputs, labels, num_classes, epochs, batch, generator)
    finally:
        torch.set_num_threads(threads)
    for stack in stacks:
        stack.weight.requires_grad_(False)
        stack.bias.requires_grad_(False)
    return stacks, max_iter


def _sgd_loop(
    stacks: list[HeadStack],
    inputs: dict[tuple[int, bool], Tensor],
    labels: Tensor,
    num_classes: int,
    epochs: int,
    batch: int,
    generator: torch.Generator,
) -> None:
    """The SGD steps of :func:`train_heads`."""
    n = len(labels)
    steps_per_epoch = n // batch
    max_iter = epochs * steps_per_epoch
    momentum: dict[int, tuple[Tensor, Tensor]] = {}
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for k in range(steps_per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            y = labels[idx]
            factor = 0.5 * (1.0 + math.cos(math.pi * step / max_iter))  # cosine to 0, L519
            for s, stack in enumerate(stacks):
                x = inputs[stack.key][idx]  # (b, d)
                logits = stack.forward(x)  # (b, H, C)
                heads_n = logits.shape[1]
                # mean over (sample, head) × heads = the sum of the heads' mean losses
                loss = F.cross_entropy(
                    logits.reshape(-1, num_classes), y.repeat_interleave(heads_n)
                )
                grad_w, grad_b = torch.autograd.grad(loss * heads_n, (stack.weight, stack.bias))
                with torch.no_grad():
                    if s in momentum:
                        buf_w, buf_b = momentum[s]
                        buf_w.mul_(MOMENTUM).add_(grad_w)
                        buf_b.mul_(MOMENTUM).add_(grad_b)
                    else:  # torch.optim.SGD: the first step's buffer is the gradient
                        buf_w, buf_b = grad_w.clone(), grad_b.clone()
                        momentum[s] = (buf_w, buf_b)
                    lr = stack.lr * factor  # (H,)
                    stack.weight.sub_(lr[None, :, None] * buf_w)
                    stack.bias.sub_(lr[:, None] * buf_b)
            step += 1


def _head_logits(
    stacks: Sequence[HeadStack], n_heads: int, inputs: dict[tuple[int, bool], Tensor]
) -> list[NDArray[np.float32]]:
    """Logits ``(N, C)`` of every head, in grid order."""
    out: list[NDArray[np.float32]] = [np.empty(0, dtype=np.float32)] * n_heads
    for stack in stacks:
        logits = stack.logits(inputs[stack.key]).numpy()  # (N, H, C)
        for j, i in enumerate(stack.index):
            out[i] = logits[:, j]
    return out


def linear_sgd_probe(
    train_blocks: Tensor,
    train_avgpool: Tensor,
    train_y: NDArray[np.integer],
    test_blocks: Tensor,
    test_avgpool: Tensor,
    test_y: NDArray[np.integer],
    *,
    num_classes: int,
    heads: Sequence[HeadSpec],
    epochs: int,
    batch_size: int,
    val_fraction: float,
    seed: int,
) -> SgdProbeResult:
    """Train the grid on the fit part of the training split, select on its validation part,
    score the selected head on the test split (see the module docstring).

    Args:
        train_blocks: ``(N, B, D)`` CLS tokens of the last ``B >= max n_blocks`` blocks.
        train_avgpool: ``(N, D)`` mean patch token of the last block.
        train_y: ``(N,)`` class indices ``< num_classes``.
        test_blocks: ``(M, B, D)``.
        test_avgpool: ``(M, D)``.
        test_y: ``(M,)``; only ever used to score the selected head.
        num_classes: output width of the heads.
        heads: the grid (:func:`head_grid`).
        epochs: passes over the fit part.
        batch_size: samples per SGD step.
        val_fraction: share of the training split held out for selection.
        seed: seed of the split, the initialisation and the shuffling.
    """
    if not heads:
        raise ValueError("the head grid is empty")
    start = time.perf_counter()
    y = np.asarray(train_y)
    fit_idx, val_idx = split_train_val(y, val_fraction, seed)
    kinds = sorted({(h.n_blocks, h.avgpool) for h in heads})

    def make(
        blocks: Tensor, avg: Tensor, idx: NDArray[np.intp] | None
    ) -> dict[tuple[int, bool], Tensor]:
        rows = slice(None) if idx is None else torch.as_tensor(idx)
        return {k: linear_input(blocks[rows], avg[rows], *k) for k in kinds}

    fit_inputs = make(train_blocks, train_avgpool, fit_idx)
    stacks, iterations = train_heads(
        fit_inputs,
        torch.as_tensor(y[fit_idx], dtype=torch.long),
        heads,
        num_classes,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
    )
    val_y = y[val_idx]
    val_scores = tuple(
        float(np.mean(logits.argmax(axis=1) == val_y))
        for logits in _head_logits(stacks, len(heads), make(train_blocks, train_avgpool, val_idx))
    )
    best = 0
    for i, score in enumerate(val_scores):  # strictly better replaces: first maximum wins
        if score > val_scores[best]:
            best = i
    chosen = heads[best]
    # the test split meets the selected head only
    stack = next(st for st in stacks if best in st.index)
    test_x = linear_input(test_blocks, test_avgpool, chosen.n_blocks, chosen.avgpool)
    logits = stack.logits(test_x)[:, stack.index.index(best)].numpy()
    classes = np.arange(num_classes)
    result = SgdProbeResult(
        head=chosen,
        val_top1=val_scores[best],
        top1=topk_accuracy(logits, classes, np.asarray(test_y), 1),
        top5=topk_accuracy(logits, classes, np.asarray(test_y), 5),
        val_scores=val_scores,
        heads=tuple(heads),
        iterations=iterations,
    )
    logger.info(
        "linear_sgd: %d heads, %d steps, selected %s (val top-1 %.4f) in %.1fs",
        len(heads),
        iterations,
        chosen.name(min(batch_size, len(fit_idx))),
        result.val_top1,
        time.perf_counter() - start,
    )
    return result
