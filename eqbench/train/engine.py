"""The pretraining loop: :func:`pretrain` turns a :class:`PretrainConfig` into a checkpoint.

Read top to bottom (as DINO's ``main_dino.py``): set up processes → build the method with a
seeded initialisation → AdamW with parameter groups → restore a previous state when resuming →
write ``config.yaml`` → for each step: set the scheduled learning rate and weight decay, seed the
step's randomness, forward, stop on a non-finite loss, backward, clip, step, update the EMA
teacher (methods that have one), log, checkpoint.

Files in ``out_dir`` (written by rank 0 only):

* ``config.yaml`` — the resolved config;
* ``log.jsonl`` — one JSON object per line: ``{"event": "start", ...}``, then every
  ``log_every`` steps ``{"step", "loss", <loss parts>, "lr", "weight_decay", ["grad_norm"],
  ["teacher_momentum"], "images_per_s", "elapsed_s"}`` (the momentum for methods with an EMA
  teacher, which the engine updates after every optimiser step), then
  ``{"event": "end", "step", "param_sha256_per_rank"}``;
* ``checkpoint.pt`` — the latest eqbench checkpoint with the training state
  (:mod:`eqbench.train.state`), replaced atomically every ``checkpoint_every`` steps and at
  the end.

Determinism: a step's augmentations come from a generator seeded by ``(seed, step, rank)`` and
the global torch RNG (dropout, drop-path) is re-seeded the same way each step; the data order is
a function of the seed and the data position (:mod:`eqbench.train.data`). On the CPU a run that
is interrupted and resumed ends bit-for-bit where an uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from eqbench.atomic import write_text
from eqbench.backbones import create_encoder
from eqbench.checkpoints import save_checkpoint, sha256_state_dict
from eqbench.data import load_dataset
from eqbench.device import autocast
from eqbench.errors import ConfigError, EqbenchError
from eqbench.methods import Method, TrainBatch, build_method
from eqbench.train import distributed, state
from eqbench.train.clipping import clip_gradients
from eqbench.train.config import RESUMABLE_KEYS, PretrainConfig, dump_config
from eqbench.train.data import TrainData, mix_seed
from eqbench.train.schedule import (
    learning_rate,
    parameter_groups,
    teacher_momentum,
    weight_decay,
)

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
#: The EMA teacher's backbone of self-distillation methods, as a plain eqbench checkpoint.
TEACHER_CHECKPOINT_NAME = "teacher.pt"
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.yaml"
#: What a run folder may hold besides hidden files: ``eqbench pretrain --out`` refuses a
#: non-empty folder with anything else (it would overwrite a ``config.yaml`` of the user's).
RUN_ENTRIES = frozenset(
    {CHECKPOINT_NAME, TEACHER_CHECKPOINT_NAME, LOG_NAME, CONFIG_NAME, "tensorboard", "slurm"}
)


def check_run_folder(out: Path) -> None:
    """Refuse an ``--out`` that exists and is not an (empty, or eqbench) run folder.

    A folder is a run when it holds only run entries (:data:`RUN_ENTRIES`) and its
    ``config.yaml``, if any, comes with the ``log.jsonl`` of an eqbench run.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file. Choose a folder for the run.")
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    foreign = sorted(names - RUN_ENTRIES)
    started = _log_starts_run(out / LOG_NAME)
    if foreign or (CONFIG_NAME in names and not started and CHECKPOINT_NAME not in names):
        shown = ", ".join(foreign[:3]) or CONFIG_NAME
        raise ConfigError(
            f"--out '{out}' is not empty and is not an eqbench run (it holds {shown}). Choose a "
            "new or empty folder for the run."
        )


def _log_starts_run(path: Path) -> bool:
    """Whether ``path`` is a run log: its first line is an eqbench ``start`` record."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and first.get("event") == "start"


#: Purposes mixed into per-step seeds.
_GLOBAL_RNG, _AUGMENT_RNG = 1, 2


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    *,
    stop_at: int | None = None,
    progress: bool = True,
) -> Path:
    """Pretrain ``cfg.method`` on ``cfg.dataset`` and return the checkpoint path.

    Launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set) it trains with
    DistributedDataParallel, each process taking its share of every global batch.

    Args:
        cfg: the run's config.
        out_dir: folder for ``config.yaml``, ``log.jsonl`` and ``checkpoint.pt``.
        resume: continue from ``out_dir/checkpoint.pt`` (starts afresh, with a warning, when
            there is none). The config must match the saved one except for
            :data:`~eqbench.train.config.RESUMABLE_KEYS`.
        stop_at: stop (with a checkpoint) after this many steps, as if interrupted; resuming
            later continues to ``cfg.steps``.
        progress: show the progress bar (on the main process).

    Returns:
        ``out_dir/checkpoint.pt``.

    Raises:
        EqbenchError: the out folder already holds a run and ``resume`` is off; the config does
            not match the run being resumed; the loss became NaN or infinite (the last good
            checkpoint is kept); bad config values.
    """
    out = Path(out_dir)
    _check_config(cfg, stop_at)
    check_run_folder(out)
    ctx = distributed.setup(cfg.device)
    try:
        run = _Run(cfg, out, ctx)
        run.show_progress = progress
        return run.execute(resume, stop_at or cfg.steps)
    finally:
        distributed.teardown(ctx)


def _check_config(cfg: PretrainConfig, stop_at: int | None) -> None:
    if "<" in cfg.dataset and ">" in cfg.dataset:
        raise ConfigError(
            f"The config's dataset '{cfg.dataset}' is a placeholder. Pass the real path with "
            "--set dataset=imagefolder:PATH (PATH holding train/<class>/*.jpg)."
        )
    if stop_at is not None and not 1 <= stop_at <= cfg.steps:
        raise ConfigError(f"stop_at must lie in [1, steps={cfg.steps}], got {stop_at}.")


def _build_method(cfg: PretrainConfig, ctx: distributed.DistContext) -> Method:
    """The method with its seeded initialisation, on the device (same weights on every rank)."""
    torch.manual_seed(cfg.seed)
    encoder = create_encoder(cfg.backbone, img_size=cfg.img_size, **cfg.backbone_options)
    method = build_method(cfg.method, encoder, cfg.img_size, cfg.method_options)
    if ctx.distributed and ctx.device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    return method.to(ctx.device)


class _Run:
    """One call of :func:`pretrain`: the state shared by its steps."""

    def __init__(self, cfg: PretrainConfig, out: Path, ctx: distributed.DistContext) -> None:
        if cfg.batch_size % ctx.world_size:
            raise ConfigError(
                f"batch_size {cfg.batch_size} does not split over {ctx.world_size} processes. "
                "Use a multiple of the number of processes."
            )
        self.cfg, self.out, self.ctx = cfg, out, ctx
        self.checkpoint = out / CHECKPOINT_NAME
        self.method = _build_method(cfg, ctx)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.method),
            lr=cfg.peak_lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
        )
        self.step = 0
        self.position = 0
        self.last_saved: int | None = None
        self.tensorboard: Any = None
        self.show_progress = True

    # ------------------------------------------------------------------------------ set-up
    def _restore(self, resume: bool) -> None:
        """Load ``checkpoint.pt`` when resuming; refuse to overwrite a run otherwise."""
        if not self.checkpoint.exists():
            if resume:
                logger.warning("nothing to resume in %s: starting a new run", self.out)
            return
        saved = state.read_training_checkpoint(self.checkpoint)
        saved_step = int(saved[state.TRAIN_STATE_KEY]["step"])
        if not resume:
            raise EqbenchError(
                f"'{self.out}' already holds a pretraining run (checkpoint at step {saved_step})."
                " Pass --resume to continue it, or choose another --out."
            )
        _check_resumable(saved["eqbench"].get("config", {}), self.cfg.to_dict(), self.out)
        self.step, self.position = state.restore_training_state(saved, self.method, self.optimizer)
        self.last_saved = self.step
        if self.ctx.is_main:  # a kill between teacher.pt and checkpoint.pt left them apart
            self._save_teacher()
        logger.info("resumed %s at step %d", self.out, self.step)

    def _trim_log(self) -> None:
        """Drop log records of steps after the resumed checkpoint (they will be redone), and a
        last line cut short by a killed process."""
        path = self.out / LOG_NAME
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= self.step:
                kept.append(line)
        write_text(path, "".join(f"{line}\n" for line in kept))

    def _log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            with open(self.out / LOG_NAME, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=False) + "\n")
        if self.tensorboard is not None and "event" not in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tensorboard.add_scalar(f"train/{key}", value, record["step"])

    def _save(self) -> None:
        """Write ``teacher.pt`` (methods with an EMA teacher), then ``checkpoint.pt``.

        In that order a kill between the two leaves a teacher newer than the checkpoint, which
        ``--resume`` rewrites from the checkpoint (:meth:`_save_teacher` after the restore), so
        the pair on disk always ends consistent.
        """
        if self.ctx.is_main:
            self._save_teacher()
            state.save_training_checkpoint(
                self.checkpoint,
                self.method,
                self.optimizer,
                step=self.step,
                data_position=self.position,
                world_size=self.ctx.world_size,
                config=self.cfg.to_dict(),
                name=self.cfg.run_name,
            )
        self.last_saved = self.step

    def _save_teacher(self) -> None:
        teacher = _teacher_encoder(self.method)
        if teacher is not None:  # DINO and iBOT evaluate the EMA teacher
            save_checkpoint(
                self.out / TEACHER_CHECKPOINT_NAME,
                teacher,
                method=self.method.name,
                config=self.cfg.to_dict(),
                name=f"{self.cfg.run_name}-teacher",
                trained_feature=self.method.trained_feature,
            )

    # ------------------------------------------------------------------------------ a step
    def _train_step(
        self,
        model: nn.Module,
        images: Tensor,
        aspect: Tensor | None = None,
        diagnostics: bool = False,
    ) -> tuple[dict[str, Tensor], float]:
        """One optimisation step at ``self.step``; returns detached losses and the grad norm.

        ``aspect``: the source images' width / height (``full_image``); ``diagnostics`` (log
        steps) lets the method add costlier logged entries."""
        cfg, ctx, step = self.cfg, self.ctx, self.step
        lr, wd = learning_rate(cfg, step), weight_decay(cfg, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = 0.0 if group.get("no_decay") else wd
        global_seed = mix_seed(cfg.seed, step, ctx.rank, _GLOBAL_RNG)
        # every global generator a method or augmentation might draw from, so runs repeat
        torch.manual_seed(global_seed)
        random.seed(global_seed)
        np.random.seed(global_seed % 2**32)
        generator = torch.Generator().manual_seed(mix_seed(cfg.seed, step, ctx.rank, _AUGMENT_RNG))
        batch = TrainBatch(
            images.to(ctx.device, non_blocking=True),
            generator,
            step,
            diagnostics=diagnostics,
            aspect=aspect,
        )
        with autocast(ctx.device, cfg.amp):
            losses = model(batch)
        self._check_finite(losses["loss"])
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = 0.0
        if cfg.grad_clip is not None:
            grad_norm = clip_gradients(self.method, cfg.grad_clip, cfg.grad_clip_mode)
        self.optimizer.step()
        if self.method.has_teacher:  # the unwrapped method, also under DDP
            self.method.update_teacher(teacher_momentum(cfg, step))
        return {k: v.detach().float() for k, v in losses.items()}, grad_norm

    def _check_finite(self, loss: Tensor) -> None:
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if self.ctx.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() == 1.0:
            return
        kept = (
            f"The last good checkpoint ({self.checkpoint}, step {self.last_saved}) is kept; "
            "resume from it with --resume after lowering lr, raising warmup_steps or setting "
            "grad_clip."
            if self.last_saved is not None
            else f"No checkpoint was written yet (checkpoint_every={self.cfg.checkpoint_every})."
            " Lower lr, raise warmup_steps or set grad_clip, and start again."
        )
        raise EqbenchError(
            f"The loss became {loss.item()} at step {self.step + 1} (of {self.cfg.steps}); "
            f"training stopped. {kept}"
        )

    def _mean_over_ranks(self, losses: dict[str, Tensor]) -> dict[str, float]:
        names = sorted(losses)
        values = torch.stack([losses[k] for k in names])
        if self.ctx.distributed:
            dist.all_reduce(values)
            values = values / self.ctx.world_size
        return dict(zip(names, values.tolist(), strict=True))

    # ------------------------------------------------------------------------------ the loop
    def execute(self, resume: bool, last: int) -> Path:
        cfg, ctx = self.cfg, self.ctx
        self._restore(resume)
        model: nn.Module = self.method
        if ctx.distributed:
            model = DistributedDataParallel(
                self.method,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=self.method.has_unused_parameters,
            )
        dataset = load_dataset(cfg.dataset, "train", n=cfg.n_images, seed=cfg.seed)
        data = TrainData(
            dataset,
            cfg.load_size or cfg.img_size,
            seed=cfg.seed,
            global_batch=cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            preload_max_mb=cfg.preload_max_mb,
            num_workers=cfg.num_workers,
            whole=cfg.full_image,
        )
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / CONFIG_NAME, dump_config(cfg))
            self._trim_log()
            if cfg.tensorboard:
                self.tensorboard = _tensorboard_writer(self.out)
        self._log(
            {
                "event": "start",
                "step": self.step,
                "method": self.method.name,
                "method_options": self.method.options,
                "world_size": ctx.world_size,
                "device": str(ctx.device),
                "images": len(dataset),
            }
        )
        try:
            self._loop(model, data, last)
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
        hashes = ctx.all_gather_object(
            sha256_state_dict({k: p for k, p in self.method.named_parameters()})
        )
        self._log({"event": "end", "step": self.step, "param_sha256_per_rank": hashes})
        ctx.barrier()
        return self.checkpoint

    def _loop(self, model: nn.Module, data: TrainData, last: int) -> None:
        cfg = self.cfg
        model.train()
        progress = Progress(
            TextColumn("[bold]pretrain {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not (self.ctx.is_main and self.show_progress),
        )
        start_time = tick = time.perf_counter()
        since_log = 0
        with progress:
            task = progress.add_task(cfg.method, total=cfg.steps, completed=self.step)
            for images, aspect in data.batches(self.position, max(0, last - self.step)):
                logs = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == last
                losses, grad_norm = self._train_step(model, images, aspect, diagnostics=logs)
                self.step += 1
                self.position += cfg.batch_size
                since_log += 1
                progress.advance(task)
                if self.step % cfg.log_every == 0 or self.step == last:
                    now = time.perf_counter()
                    record: dict[str, Any] = {"step": self.step, **self._mean_over_ranks(losses)}
                    record["lr"] = learning_rate(cfg, self.step - 1)
                    record["weight_decay"] = weight_decay(cfg, self.step - 1)
                    if cfg.grad_clip is not None:
                        record["grad_norm"] = grad_norm
                    if self.method.has_teacher:
                        record["teacher_momentum"] = teacher_momentum(cfg, self.step - 1)
                    record["images_per_s"] = since_log * cfg.batch_size / max(now - tick, 1e-9)
                    record["elapsed_s"] = now - start_time
                    self._log(record)
                    progress.update(task, description=f"{cfg.method} loss {record['loss']:.4g}")
                    tick, since_log = now, 0
                if self.step % cfg.checkpoint_every == 0 or self.step == last:
                    self._save()


def _teacher_encoder(method: Method) -> Any:
    """The EMA teacher's encoder of a method that has one, else ``None``."""
    teacher = getattr(method, "teacher", None)
    if method.has_teacher and isinstance(teacher, nn.ModuleDict) and "encoder" in teacher:
        return teacher["encoder"]
    return None


def _tensorboard_writer(out: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``out/tensorboard``, or ``None`` when the tensorboard
    package is not installed (the JSON-lines log is always written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.debug("tensorboard is not installed: logging to %s only", LOG_NAME)
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _check_resumable(saved: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    """Raise unless the two configs agree outside :data:`RESUMABLE_KEYS` (a key the saved config
    lacks, from before the field existed, counts as its default)."""
    fields = dataclasses.fields(PretrainConfig)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    saved = {**defaults, **saved}
    keys = sorted((set(saved) | set(current)) - RESUMABLE_KEYS)
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in differ)
        raise ConfigError(
            f"Cannot resume '{out}': the config differs from the run's ({shown}). Resume with "
            f"--config {out / CONFIG_NAME} --resume, or start a new --out."
        )
