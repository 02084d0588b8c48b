"""Image datasets: index-addressable uint8 images with labels and source groups.

Every dataset, built-in or read from a path, is an :class:`ImageDataset`. It hands out square RGB
images at the size the caller asks for (``load(indices, size)``), so the same data serves encoders
at any resolution and the synthetic probes' larger *context* crops. ``groups`` names the source of
each image (a photo, a file); train and test splits of the built-in data never share a group.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbench.errors import DatasetError
from eqbench.registry import Registry


class ImageDataset(ABC):
    """A split of a dataset.

    Attributes:
        name: registry name (``photos``, ``cifar10``, ...).
        split: ``train`` or ``test``.
        labels: ``(N,)`` int64 class index per image.
        groups: ``(N,)`` int64 source id per image (photo, file); equal to the index when each
            image is its own source.
        classes: class names, ``len(classes)`` > every label.
    """

    name: str
    split: str
    labels: np.ndarray
    groups: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @abstractmethod
    def load(self, indices: Sequence[int], size: int) -> Tensor:
        """Images ``indices`` as a uint8 tensor ``(B, 3, size, size)``, deterministic per index.

        The memory layout is the dataset's choice (resized images come channels-last); callers
        that need a compact NCHW tensor use :func:`unit_float` or ``.contiguous()``."""

    def load_whole(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Images ``indices`` whole, each resized to ``size × size`` whatever its shape, and the
        aspect ratio of each source image.

        Pretraining draws its random resized crops from these, over the full image as
        torchvision's ``RandomResizedCrop`` does (:func:`eqbench.methods.augment.source_aspect`).
        Datasets of square images keep this default: :meth:`load`, and aspect ratios of 1.

        Returns:
            ``(images (B, 3, size, size) uint8, aspect (B,) float64)``, ``aspect`` the source's
            width / height.
        """
        return self.load(indices, size), torch.ones(len(indices), dtype=torch.float64)

    def load_window(self, indices: Sequence[int], size: int, window: int) -> Tensor:
        """The centre ``window × window`` of :meth:`load` ``(indices, size)``, value for value.

        The synthetic protocols' identity view is the centre of a larger context image;
        datasets that can compute it from fewer source pixels (the built-in photos) override
        this. The memory layout is the dataset's choice, as for :meth:`load`."""
        return center_crop(self.load(indices, size), window)

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies this split's content (name, path, split, seed, size, ...), JSON-able.
        Used in feature-cache keys and result provenance."""

    def digest(self) -> str:
        """A short stable hash of :meth:`fingerprint`."""
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``--dataset NAME[:PATH]`` option."""

    name: str
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        name, sep, path = text.partition(":")
        if not name:
            raise DatasetError(f"Empty dataset name in '{text}'. Use NAME or NAME:PATH.")
        return cls(name=name, path=path if sep else None)

    def __str__(self) -> str:
        return self.name if self.path is None else f"{self.name}:{self.path}"


#: A dataset factory: ``(path, split, size_hint, seed) -> ImageDataset``. ``n`` is the number of
#: images wanted for generated datasets (ignored by fixed ones); ``seed`` picks generated crops.
DatasetFactory = Callable[..., ImageDataset]

DATASETS: Registry[DatasetFactory] = Registry("dataset", "eqbench ls datasets")


def load_dataset(
    spec: DatasetSpec | str, split: str, *, n: int | None = None, seed: int = 0
) -> ImageDataset:
    """Open ``split`` (``train``/``test``) of a dataset by spec, with clear errors for bad paths."""
    if isinstance(spec, str):
        spec = DatasetSpec.parse(spec)
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split '{split}'; use train or test.")
    factory = DATASETS.get(spec.name)
    ds = factory(path=spec.path, split=split, n=n, seed=seed)
    if len(ds) == 0:
        raise DatasetError(
            f"Dataset '{spec}' has no images in its {split} split. Check the path and layout "
            "(`eqbench ls datasets` describes each layout)."
        )
    return ds


def check_root(path: str | None, name: str, layout: str) -> Path:
    """The resolved dataset root of ``NAME:PATH``, or a :class:`DatasetError` naming the layout."""
    if not path:
        raise DatasetError(f"The {name} dataset needs a path: --dataset {name}:PATH. {layout}")
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"Dataset folder '{root}' {what}. {layout}")
    return root


def refuse_path(name: str, path: str | None, alternative: str = "") -> None:
    """Raise :class:`DatasetError` when the built-in dataset ``name`` is given a ``path``.

    Args:
        name: registry name of the built-in dataset.
        path: the ``PATH`` of ``NAME:PATH``; ``None`` when there was none.
        alternative: what else to do, appended to the remedy ``Use --dataset NAME``
            (``", or davis:PATH for DAVIS-2017"``).
    """
    if path is not None:
        raise DatasetError(
            f"The built-in dataset '{name}' takes no path (got '{path}'). "
            f"Use --dataset {name}{alternative}."
        )


def split_size(split: str, n: int | None, default_n: dict[str, int], items: str = "images") -> int:
    """The item count of a split of a built-in dataset: ``n``, or ``default_n[split]`` when
    ``None``; refuses an unknown split and a negative ``n``.

    Args:
        split: the split, one of the keys of ``default_n``.
        n: the count asked for.
        default_n: the dataset's count per split.
        items: what the dataset's items are called (``images``, ``clips``), for the message.
    """
    if split not in default_n:
        raise DatasetError(f"Unknown split '{split}'; use {' or '.join(default_n)}.")
    if n is not None and n < 0:
        raise DatasetError(f"Number of {items} must be >= 0, got {n}.")
    return default_n[split] if n is None else n


def generated_split_size(
    name: str, path: str | None, split: str, n: int | None, default_n: dict[str, int]
) -> int:
    """The image count of a split of the generated dataset ``name`` (built in, no PATH):
    ``n``, or ``default_n[split]`` when ``None``; refuses a path, an unknown split, a negative
    ``n``."""
    if path:
        raise DatasetError(f"{name} is built in and takes no PATH; use --dataset {name}.")
    return split_size(split, n, default_n)


def seeded_subset(total: int, n: int | None, seed: int, split: str) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``n`` of ``total`` items (all when ``None``)."""
    if n is None or n >= total:
        return np.arange(total)
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, int(split == "test")])
    return np.sort(rng.choice(total, size=n, replace=False))


def kept_subset(
    total: int, n: int | None, seed: int, split: str, items: str = "images"
) -> tuple[np.ndarray, int | None]:
    """The :func:`seeded_subset` of ``n`` of a split's ``total`` items, and the ``n`` a dataset
    records: ``n``, or ``None`` when the whole split is kept.

    Raises:
        DatasetError: ``n`` is negative (the message calls the items ``items``).
    """
    if n is not None and n < 0:
        raise DatasetError(f"Number of {items} must be >= 0, got {n}.")
    return seeded_subset(total, n, seed, split), n if n is not None and n < total else None


def generated_sample_rng(seed: int, split: str, index: int, version: int) -> np.random.Generator:
    """The generator of image ``index`` of a generated dataset's split: a stream per (seed, split,
    index, generator version), so train and test never share an image and any image renders
    alone."""
    stream = int(split == "test")
    return np.random.default_rng([seed & 0xFFFFFFFF, stream, index, version])


#: Fewest rows a thread of :func:`parallel_rows` is given; smaller batches run inline.
MIN_ROWS_PER_THREAD = 16


def parallel_rows(fill: Callable[[range], None], n: int) -> None:
    """Run ``fill`` over rows ``0 … n−1`` split across up to ``torch.get_num_threads()`` threads.

    For per-image work that PyTorch cannot batch (resizing crops of different sizes): each
    kernel call is too small for PyTorch's own intra-op threads to pay, so the images are
    shared out instead (strided, which balances large and small crops). ``fill`` must write
    disjoint rows, so the result does not depend on the schedule. The caller's inference and
    grad modes hold in the threads too; exceptions propagate.
    """
    workers = min(torch.get_num_threads(), n // MIN_ROWS_PER_THREAD)
    if workers <= 1:
        fill(range(n))
        return
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run(rows: range) -> None:  # autograd modes are per thread: carry the caller's over
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            fill(rows)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in [pool.submit(run, range(k, n, workers)) for k in range(workers)]:
            done.result()


def center_crop(images: Tensor, size: int) -> Tensor:
    """Centre ``size × size`` crop of a ``(B, C, H, W)`` batch (a view)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def unit_float(images: Tensor) -> Tensor:
    """uint8 images ``(B, 3, H, W)`` in any memory layout as a compact float32 tensor in [0, 1]."""
    return torch.empty(images.shape, dtype=torch.float32).copy_(images).div_(255.0)


def resize_square(images: Tensor, size: int, out: Tensor | None = None) -> Tensor:
    """Resize a uint8 or float ``(B, 3, h, w)`` batch to ``(B, 3, size, size)`` (antialiased).

    uint8 batches on the CPU are resized in uint8 (PyTorch's vectorised antialiased kernel, about
    3x faster than resizing in float; within one grey level of the float result), from a compact
    channels-last copy: the kernel works on interleaved pixels, and a crop of an (H, W, 3) photo
    is interleaved but not compact, which sends it down a slower path (same values, ~15% slower).
    With ``out`` (same dtype, any layout; channels-last is written in place) the result goes
    there, which saves a copy per call when filling a batch image by image.
    """
    if out is not None and tuple(out.shape) != (*images.shape[:2], size, size):
        raise ValueError(
            f"out has shape {tuple(out.shape)}, expected {(*images.shape[:2], size, size)}"
        )
    if images.shape[-1] == size and images.shape[-2] == size:
        return images if out is None else out.copy_(images)
    if images.dtype == torch.uint8 and images.device.type == "cpu":
        compact = images.contiguous(memory_format=torch.channels_last)
        if out is not None:  # the kernel's out= form, as F.interpolate calls it
            return torch.ops.aten._upsample_bilinear2d_aa.out(
                compact, [size, size], False, None, None, out=out
            )
        return torch.nn.functional.interpolate(
            compact, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    x = images.float()
    x = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    if images.dtype == torch.uint8:
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x if out is None else out.copy_(x)


@functools.cache
def _head_plan(size_in: int, size_out: int, stop: int) -> tuple[int, float] | None:
    """How to compute the first ``stop`` outputs of a ``size_in → size_out`` uint8 resize alone.

    PyTorch's antialiased bilinear kernel gives output ``i`` the window of source pixels around
    ``center = scale · (i + 0.5)`` (``scale = size_in / size_out``), clipped to the image, and
    rounds the normalised weights to int16 at a precision set by the largest weight of the call
    (``_compute_index_ranges_int16_weights`` in ATen's ``UpSampleKernel.cpp``, after PIL). So
    resizing only the first ``extent`` source pixels to ``stop`` outputs, with the scale passed
    explicitly, reproduces those outputs bit for bit when (a) ``extent`` reaches the end of the
    last needed window and (b) the weights of the first ``stop`` outputs give the same precision
    as all of them. This replays that arithmetic in double precision, in ATen's order, and
    returns ``(extent, scale argument)``, or ``None`` when the shortcut would change a value or
    save nothing. Tests check it against the full resize for every source size.
    """
    scale = size_in / size_out
    support = scale if scale >= 1.0 else 1.0  # bilinear: interp_size 2, widened when shrinking
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    max_interp = math.ceil(support) * 2 + 1
    center = scale * (np.arange(size_out) + 0.5)
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate, as here
    end = np.minimum((center + support + 0.5).astype(np.int64), size_in)
    xsize = np.clip(end - xmin, 0, max_interp)
    taps = np.arange(max_interp)
    x = np.abs(((taps[None, :] + xmin[:, None]) - center[:, None] + 0.5) * invscale)
    weights = np.where((x < 1.0) & (taps[None, :] < xsize[:, None]), 1.0 - x, 0.0)
    total = np.zeros(size_out)
    for j in range(max_interp):  # summed tap by tap, in ATen's order
        total += weights[:, j]
    peak = np.where(total != 0.0, weights.max(axis=1) / np.where(total != 0.0, total, 1.0), 0.0)
    if _int16_precision(float(peak.max())) != _int16_precision(float(peak[:stop].max())):
        return None
    extent = int(end[:stop].max())
    if extent == stop:  # the kernel skips a pass whose input and output sizes agree
        extent += 1
    if extent > size_in or (extent == size_in and stop == size_out):
        return None
    argument = size_out / size_in  # ATen takes 1 / argument as the scale: find an exact one
    for _ in range(4):
        if 1.0 / argument == scale:
            return extent, argument
        argument = math.nextafter(argument, math.inf if 1.0 / argument > scale else 0.0)
    return None


def _int16_precision(peak: float) -> int:
    """Bits of the int16 weights ATen's uint8 resize uses for a largest weight ``peak``."""
    bits = 0
    while bits < 22 and int(0.5 + peak * (1 << (bits + 1))) < (1 << 15):
        bits += 1
    return bits


def resize_box(photo: np.ndarray, top: int, left: int, side: int, size: int, out: Tensor) -> None:
    """Resize a square box of a uint8 ``(H, W, C)`` image to ``size`` into ``out``, in place.

    ``out`` is ``(1, C, stop, stop)`` with ``stop <= size`` (channels-last is written without a
    copy) and receives the first ``stop`` rows and columns of
    ``resize_square(box, size)``, value for value. When ``stop < size`` they are computed from
    the top-left source pixels they need only (:func:`_head_plan`): a centre window of a
    resize is the tail of such a head, so this serves the synthetic protocols' identity views,
    which keep the centre quarter of their context image.

    Made for :func:`parallel_rows` workers: the box is copied by numpy, on the calling thread,
    where PyTorch would open an intra-op parallel region for a copy this size and so put more
    threads than cores to work.
    """
    stop = out.shape[-1]
    plan = _head_plan(side, size, stop) if stop < size else None
    extent = side if plan is None else plan[0]
    box = np.ascontiguousarray(photo[top : top + extent, left : left + extent])
    pixels = torch.from_numpy(box).permute(2, 0, 1).unsqueeze(0)
    if plan is not None:
        torch.ops.aten._upsample_bilinear2d_aa.out(
            pixels, [stop, stop], False, plan[1], plan[1], out=out
        )
    elif stop == size:
        resize_square(pixels, size, out=out)
    else:
        out.copy_(resize_square(pixels, size)[..., :stop, :stop])
