"""Encode image sets once and cache the features on disk.

The cache key is the sha256 of: the checkpoint's sha256, the dataset split's fingerprint, what was
done to the images (view and context size, transformation name, resolved options and parameter
seed) and :data:`FEATURE_FORMAT`. So a task group that asks for the same images twice (the
synthetic probes and the invariance scores share every pair) encodes them once, and a second run
reads them back from disk.

Features are stored as safetensors (no pickle): ``cls`` and ``avgpool`` ``(N, D)`` and ``grid``
``(N, D·k²)`` float32, plus the transformation parameters ``params`` ``(N, P)`` when there are any.

The cache folder can be shared by concurrent runs and by the processes of a ``torchrun`` launch:
an entry is written to a temporary file and renamed onto its content-addressed name
(:mod:`eqbench.atomic`), so a reader sees no entry or a whole one, and two writers of the same key
leave one entry (both wrote the same features). Under ``torchrun`` only rank 0 writes
(:mod:`eqbench.features.sharding`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from eqbench.atomic import write_with
from eqbench.backbones.base import FEATURE_KINDS, Encoder, Features
from eqbench.data.base import ImageDataset
from eqbench.device import autocast
from eqbench.errors import ConfigError, EqbenchError
from eqbench.progress import progress_bar

log = logging.getLogger(__name__)

#: Bump when the extraction itself changes (cropping, pooling, dtype), invalidating old caches.
FEATURE_FORMAT = 3  # 2: uint8 antialiased resizing of the source images; 3: the grid feature

#: The features every cache entry holds (``cls+avgpool`` is made from two of them).
STORED_KINDS = ("cls", "avgpool", "grid")

#: ``indices -> float images (B, 3, S, S) in [0, 1]`` on the CPU.
BatchFn = Callable[[Sequence[int]], Tensor]


@dataclass(frozen=True)
class FeatureRequest:
    """One image set to encode: the arguments of :meth:`FeatureStore.get`.

    A protocol that lists its requests beforehand (:meth:`~eqbench.protocols.base.Protocol.
    feature_requests`) can have them encoded sharded over the processes of a ``torchrun``
    launch before it runs.
    """

    dataset: ImageDataset
    what: dict[str, Any]
    make_batch: BatchFn
    extra: dict[str, Tensor] | None = None
    label: str = ""


def batch_spans(n: int, batch_size: int) -> list[range]:
    """The index ranges of the batches that encode images ``0..n-1``, in order."""
    return [range(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]


def default_cache_dir() -> Path:
    """``$EQBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/eqbench/features`` (``~/.cache/...``)."""
    env = os.environ.get("EQBENCH_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eqbench" / "features"


class FeatureStore:
    """Encodes image sets with one encoder, caching features in memory and on disk.

    Args:
        encoder: the frozen model.
        checkpoint_sha256: identifies the weights in cache keys.
        device: where to run the encoder.
        cache_dir: folder for cached features; ``None`` disables the disk cache.
        batch_size: images per forward pass.
        show_progress: draw a rich progress bar while encoding.
        prefetch: on the CPU, make the next batch in a background thread during the forward
            pass; it pays only where the forward leaves cores idle (on 2 cores it is ~10 %
            slower, ``benchmarks/feature_extraction.py``). On CUDA the next batch is always made
            while the GPU works.
    """

    def __init__(
        self,
        encoder: Encoder,
        checkpoint_sha256: str,
        device: torch.device,
        cache_dir: Path | None,
        batch_size: int = 256,
        show_progress: bool = True,
        prefetch: bool = False,
    ) -> None:
        self.encoder = encoder.to(device).eval()
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = device
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.prefetch = prefetch
        self._memory: dict[str, dict[str, Tensor]] = {}
        #: Counters for benchmarks and tests: images encoded and cache hits.
        self.images_encoded = 0
        self.cache_hits = 0

    def key(self, dataset: ImageDataset, what: dict[str, Any]) -> str:
        """The cache key of ``what`` applied to ``dataset``."""
        blob = json.dumps(
            {
                "checkpoint": self.checkpoint_sha256,
                "dataset": dataset.fingerprint(),
                "what": what,
                "format": FEATURE_FORMAT,
            },
            sort_keys=True,
        ).encode()
        return hashlib.sha256(blob).hexdigest()

    def _path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.safetensors"

    def get(
        self,
        dataset: ImageDataset,
        what: dict[str, Any],
        make_batch: BatchFn,
        extra: dict[str, Tensor] | None = None,
        label: str = "",
    ) -> dict[str, Tensor]:
        """Features of every image of ``dataset`` as produced by ``make_batch``.

        Returns a dict with ``cls``, ``avgpool`` and ``grid`` float32 tensors (and ``extra``,
        stored alongside). ``what`` must describe everything ``make_batch`` does to the images.
        """
        key = self.key(dataset, what)
        feats = self.cached(key)
        if feats is not None:
            self.cache_hits += 1
            return feats
        return self.keep(key, self.encode(dataset, make_batch, label), extra)

    def fetch(self, request: FeatureRequest) -> dict[str, Tensor]:
        """:meth:`get` of a :class:`FeatureRequest`."""
        return self.get(
            request.dataset,
            request.what,
            request.make_batch,
            extra=request.extra,
            label=request.label,
        )

    def cached(self, key: str) -> dict[str, Tensor] | None:
        """The features under ``key`` from memory, else from the disk cache (then kept in
        memory); ``None`` when there are none or the entry is unreadable."""
        if key in self._memory:
            return self._memory[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                feats = load_file(str(path))
            except (SafetensorError, OSError) as exc:  # a damaged cache entry: re-encode
                log.warning("ignoring unreadable feature cache %s (%s)", path, exc)
                return None
            self._memory[key] = feats
            return feats
        return None

    def keep(
        self, key: str, feats: dict[str, Tensor], extra: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Store freshly encoded ``feats`` (and ``extra`` beside them) under ``key``: in memory
        and, atomically, in the disk cache. Returns what was stored."""
        if extra:
            feats.update({k: v.contiguous() for k, v in extra.items()})
        path = self._path(key)
        if path is not None:
            write_with(path, lambda tmp: save_file(feats, str(tmp)))
        self._memory[key] = feats
        return feats

    def patch_maps(
        self,
        dataset: ImageDataset,
        what: dict[str, Any],
        make_batch: BatchFn,
        n: int | None = None,
        label: str = "",
    ) -> Tensor:
        """Patch-token maps ``(N, D, h, w)`` (float32, CPU) of ``n`` images (default: all).

        For the dense protocols. Cached in memory only (patch tokens are large): a task group
        that asks for the same images twice encodes them once per run.
        """
        n = len(dataset) if n is None else n
        key = "patches:" + self.key(dataset, {**what, "n": n})
        if key in self._memory:
            self.cache_hits += 1
            return self._memory[key]["patch"]
        spans = batch_spans(n, self.batch_size)
        maps = self.encode_patch_maps(make_batch, spans, label or dataset.name)
        self._memory[key] = {"patch": maps}
        return maps

    @torch.inference_mode()
    def encode_patch_maps(self, make_batch: BatchFn, spans: list[range], label: str) -> Tensor:
        """Patch-token maps ``(N, D, h, w)`` (float32, CPU) of the images of ``spans``, in order,
        one batch per span; nothing is cached (a rank's shard under ``torchrun``)."""
        n = sum(len(span) for span in spans)
        parts: list[Tensor] = []
        start = time.perf_counter()
        with progress_bar("encode", self.show_progress) as progress:
            bar = progress.add_task(label or "patch maps", total=n)
            for count, out in self._forward_batches(make_batch, spans):
                parts.append(out.patch_map().float().cpu())
                progress.advance(bar, count)
        self.images_encoded += n
        log.info("encoded %d patch maps (%s) in %.1fs", n, label, time.perf_counter() - start)
        if not parts:
            return torch.empty(0)
        return torch.cat(parts)

    def last_blocks(self, request: FeatureRequest, n: int) -> dict[str, Tensor]:
        """The CLS tokens of the ``n`` last blocks and the mean patch token of the last block of
        every image of ``request``, cached like :meth:`fetch` (dinov2's linear-classifier input,
        facebookresearch/dinov2 ``dinov2/eval/linear.py`` L171-183 ``create_linear_input``).

        Returns:
            ``cls_blocks`` ``(N, n, D)`` float32 (block order, last block last; the mean patch
            token for models without a CLS token) and ``avgpool`` ``(N, D)``.

        Raises:
            ConfigError: the backbone has fewer than ``n`` blocks
                (:meth:`~eqbench.backbones.base.Encoder.block_count`).
        """
        key = self.key(request.dataset, {**request.what, "last_blocks": n})
        feats = self.cached(key)
        if feats is not None:
            self.cache_hits += 1
            return feats
        encoder = self.encoder

        def forward(images: Tensor) -> list[Features]:
            return encoder.forward_layers(images, n, last=True)

        cls_parts: list[Tensor] = []
        avg_parts: list[Tensor] = []
        start = time.perf_counter()
        spans = batch_spans(len(request.dataset), self.batch_size)
        with (
            torch.inference_mode(),
            progress_bar("encode", self.show_progress) as progress,
        ):
            bar = progress.add_task(
                request.label or request.dataset.name, total=len(request.dataset)
            )
            for count, outs in self._forward_batches(request.make_batch, spans, forward):
                blocks = [out.pooled("cls").float().cpu() for out in outs]  # n × (B, D)
                cls_parts.append(torch.stack(blocks, dim=1))  # (B, n, D)
                avg_parts.append(outs[-1].pooled("avgpool").float().cpu())  # (B, D)
                progress.advance(bar, count)
        self.images_encoded += len(request.dataset)
        log.info(
            "encoded %d images, %d last blocks (%s) in %.1fs",
            len(request.dataset),
            n,
            request.label,
            time.perf_counter() - start,
        )
        return self.keep(key, {"cls_blocks": torch.cat(cls_parts), "avgpool": torch.cat(avg_parts)})

    def _forward_batches(
        self,
        make_batch: BatchFn,
        spans: list[range],
        forward: Callable[[Tensor], Any] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Encode the images of ``spans`` batch by batch, making the next batch while this one
        runs.

        On CUDA the forward pass is asynchronous: the next batch is made on the CPU (into pinned
        memory, copied without blocking) after the current forward is launched and before its
        outputs are read, so making views and encoding overlap without a thread. On the CPU
        (``prefetch``) a single background thread makes the next batch during the forward;
        batches are a deterministic function of their indices, so the features do not depend on
        the schedule. Yields ``(batch length, encoder output)`` in order; ``forward`` replaces
        the encoder's forward pass (e.g. to read several blocks).
        """
        run = self.encoder if forward is None else forward
        if not spans:
            return
        cuda = self.device.type == "cuda"

        def make(span: range) -> Tensor:
            images = make_batch(list(span))
            return images.pin_memory() if cuda else images

        pool = ThreadPoolExecutor(max_workers=1) if self.prefetch and not cuda else None
        try:
            ready: Future[Tensor] | Tensor = make(spans[0])
            for i, span in enumerate(spans):
                images = ready.result() if isinstance(ready, Future) else ready
                later = spans[i + 1] if i + 1 < len(spans) else None
                if pool is not None and later is not None:
                    ready = pool.submit(make, later)
                with autocast(self.device):
                    out = run(images.to(self.device, non_blocking=cuda))
                if pool is None and later is not None:
                    ready = make(later)  # on CUDA this runs while the GPU encodes ``images``
                yield len(span), out
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    @torch.inference_mode()
    def encode(
        self,
        dataset: ImageDataset,
        make_batch: BatchFn,
        label: str,
        spans: list[range] | None = None,
    ) -> dict[str, Tensor]:
        """The :data:`STORED_KINDS` features of the images of ``spans`` (default: every image
        of ``dataset``, in batches of ``batch_size``), in order."""
        if spans is None:
            spans = batch_spans(len(dataset), self.batch_size)
        n = sum(len(span) for span in spans)
        parts: dict[str, list[Tensor]] = {kind: [] for kind in STORED_KINDS}
        start = time.perf_counter()
        with progress_bar("encode", self.show_progress) as progress:
            bar = progress.add_task(label or dataset.name, total=n)
            for count, out in self._forward_batches(make_batch, spans):
                for kind in STORED_KINDS:
                    parts[kind].append(out.pooled(kind).float().cpu())
                progress.advance(bar, count)
        self.images_encoded += n
        log.info("encoded %d images (%s) in %.1fs", n, label, time.perf_counter() - start)
        return {kind: torch.cat(chunks) for kind, chunks in parts.items()}


def select_feature(feats: dict[str, Tensor], kind: str) -> Tensor:
    """The ``cls`` / ``avgpool`` / ``cls+avgpool`` / ``grid`` feature matrix from a cached entry.

    Raises:
        EqbenchError: the features hold NaN or infinite values (the model overflowed), which
            would otherwise score chance level silently.
    """
    if kind == "cls+avgpool":
        out = torch.cat([feats["cls"], feats["avgpool"]], dim=1)
    elif kind in STORED_KINDS:
        out = feats[kind]
    else:
        raise ValueError(f"unknown feature kind {kind!r}; use one of {FEATURE_KINDS}")
    return check_finite(out, kind)


def check_finite(features: Tensor, kind: str) -> Tensor:
    """``features`` unchanged, or :class:`EqbenchError` when they hold NaN or infinite values
    (the model overflowed), which would otherwise score chance level silently."""
    if features.is_floating_point() and not bool(features.isfinite().all()):
        raise EqbenchError(
            f"The model's {kind} features hold NaN or infinite values, so no probe can read "
            "them. Check the checkpoint (an earlier one of the run), or --device cpu."
        )
    return features


def check_feature(feature: str, where: str) -> None:
    """Raise :class:`ConfigError` unless ``feature`` is ``auto`` or one of
    :data:`~eqbench.backbones.base.FEATURE_KINDS`."""
    if feature not in ("auto", *FEATURE_KINDS):
        raise ConfigError(
            f"{where}: unknown feature {feature!r}; choose auto (the feature an eqbench "
            f"checkpoint's method trained, else cls) or one of {', '.join(FEATURE_KINDS)}."
        )
