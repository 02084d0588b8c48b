"""Video object segmentation by label propagation from frozen patch features (paper Table 7).

For each video of the test split: encode every frame with the frozen backbone (shorter side
``image_size``, longer side in proportion, floored to a multiple of ``side_multiple`` as DINO's
``read_frame`` does with 64), propagate the first frame's annotation through the clip
(:mod:`eqbench.protocols.video.propagation`, the DINO / CropMAE protocol) and score the predictions
at the annotation's resolution with the DAVIS measures
(:mod:`eqbench.protocols.video.davis_metrics`): J, F and J&F means over objects. Copying the first
annotation to every frame is scored beside it (``*_copy_first``): the trivial reference a
representation must beat.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eqbench.backbones.input_size import size_multiple
from eqbench.data.base import DatasetSpec
from eqbench.data.video import VideoDataset
from eqbench.device import autocast
from eqbench.errors import DatasetError
from eqbench.features.store import FeatureStore
from eqbench.progress import progress_bar
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol, open_split
from eqbench.protocols.video.davis_metrics import VOID, DavisScores
from eqbench.protocols.video.parsing_metrics import PartIoU
from eqbench.protocols.video.propagation import (
    PropagationConfig,
    labels_to_mask,
    one_hot_labels,
    propagate,
)


@dataclass(frozen=True)
class VideoPropagationConfig:
    """Options of the video label-propagation task.

    Attributes:
        image_size: shorter side of the frames fed to the encoder (DINO: 480).
        side_multiple: the longer side is floored to a multiple of this (DINO: 64).
        n_test: videos of the test split (``None``: all).
        n_last_frames / size_mask_neighborhood / topk / temperature: propagation
            (:class:`~eqbench.protocols.video.propagation.PropagationConfig`).
    """

    image_size: int = 144
    side_multiple: int = 16
    n_test: int | None = 8
    n_last_frames: int = 7
    size_mask_neighborhood: int = 12
    topk: int = 5
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        if self.side_multiple < 1:
            raise ValueError("side_multiple must be at least 1")
        self.propagation()  # validates the propagation options

    def propagation(self) -> PropagationConfig:
        """The propagation options."""
        return PropagationConfig(
            n_last_frames=self.n_last_frames,
            size_mask_neighborhood=self.size_mask_neighborhood,
            topk=self.topk,
            temperature=self.temperature,
        )


def encoded_size(
    height: int, width: int, short: int, side_multiple: int, multiple: int
) -> tuple[int, int]:
    """``(h, w)`` the frames are encoded at: the shorter side ``short``, the longer one in
    proportion floored to a multiple of ``side_multiple`` (DINO ``read_frame``, lines 197-214)
    and then of the encoder's ``multiple`` (a ViT's patch size), at least one of each."""
    long_side = short * max(height, width) / min(height, width)
    long_side = max(side_multiple, math.floor(long_side / side_multiple) * side_multiple)
    long_side = max(multiple, long_side // multiple * multiple)
    return (short, int(long_side)) if height <= width else (int(long_side), short)


@torch.inference_mode()
def encode_frames(store: FeatureStore, frames: np.ndarray, size: tuple[int, int]) -> Tensor:
    """Patch-token maps ``(T, D, h, w)`` (float32, on ``store.device``) of uint8 frames
    ``(T, H, W, 3)`` resized to ``size`` (antialiased bilinear)."""
    out = []
    for lo in range(0, len(frames), store.batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(frames[lo : lo + store.batch_size]))
        images = batch.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
        images = images.clamp(0, 255).div(255.0).to(store.device)
        with autocast(store.device):
            feats = store.encoder(images)
        out.append(feats.patch_map().float())
    return torch.cat(out)


def predict_video(
    store: FeatureStore, frames: np.ndarray, first: np.ndarray, cfg: VideoPropagationConfig
) -> np.ndarray:
    """Object ids ``(T, H, W)`` of every frame of a video, propagated from ``first`` ``(H, W)``
    (frame 0 of the result is ``first``)."""
    height, width = first.shape
    size = encoded_size(height, width, cfg.image_size, cfg.side_multiple, size_multiple_of(store))
    feats = encode_frames(store, frames, size)  # (T, D, h, w)
    n_labels = int(first.max()) + 1
    grid = (int(feats.shape[-2]), int(feats.shape[-1]))
    labels = one_hot_labels(torch.from_numpy(first), grid, n_labels)
    soft = propagate(feats, labels.to(feats.device), cfg.propagation())  # (T, C, h, w)
    pred = np.empty((len(frames), height, width), dtype=np.int64)
    pred[0] = first
    for t in range(1, len(frames)):
        pred[t] = labels_to_mask(soft[t], size, (height, width)).cpu().numpy()
    return pred


def size_multiple_of(store: FeatureStore) -> int:
    """The multiple the encoder needs input sides to be (1 for most)."""
    return size_multiple(store.encoder)


def open_videos(dataset: DatasetSpec, n: int | None, seed: int) -> VideoDataset:
    """The test split of ``dataset``, which must be a video dataset."""
    lacking = "videos. Use shape_clips (built-in), davis:PATH or vip:PATH."
    return open_split(dataset, "test", n, seed, VideoDataset, lacking)


def propagated_videos(
    ctx: EvalContext, cfg: VideoPropagationConfig
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, annotations (T, H, W), first frame's labels (H, W), prediction (T, H, W))``
    of every video of the context's test split, with a progress bar."""
    videos = open_videos(ctx.dataset, cfg.n_test, ctx.seed)
    with progress_bar("propagate", ctx.store.show_progress) as progress:
        bar = progress.add_task(videos.name, total=len(videos.videos))
        for v, name in enumerate(videos.videos):
            frames, gt = videos.frames(v), videos.masks(v)
            if frames.shape[:3] != gt.shape:
                raise DatasetError(
                    f"Video '{name}': frames {frames.shape[1:3]} and annotations "
                    f"{gt.shape[1:]} differ in size. Use the annotations of the same "
                    "resolution as the frames."
                )
            first = np.where(gt[0] == VOID, 0, gt[0])
            yield name, gt, first, predict_video(ctx.store, frames, first, cfg)
            progress.advance(bar)


@PROTOCOLS.register("video_propagation")
class VideoPropagation(Protocol):
    """Label propagation from the first frame's annotation; DAVIS J, F and J&F means."""

    Config = VideoPropagationConfig
    metrics: ClassVar[tuple[str, ...]] = (
        "jf", "j", "f", "jf_copy_first", "j_copy_first", "f_copy_first"
    )  # fmt: skip
    units = dict.fromkeys(metrics, "percent")

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        open_videos(dataset, config.n_test, seed)

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: VideoPropagationConfig = config
        scores, copied = DavisScores(), DavisScores()
        for name, gt, first, pred in propagated_videos(ctx, cfg):
            scores.add_sequence(name, gt, pred)
            copied.add_sequence(name, gt, np.broadcast_to(first, gt.shape))
        out = scores.summary()
        base = copied.summary()
        return {
            **{k: [v] for k, v in out.items()},
            **{f"{k}_copy_first": [v] for k, v in base.items()},
        }


@PROTOCOLS.register("video_part_propagation")
class VideoPartPropagation(VideoPropagation):
    """Label propagation of multi-class part masks from the first frame; mIoU over classes.

    The first frame's classes (VIP: 20 human parts) are propagated as
    :class:`VideoPropagation` propagates object ids, and every frame of every video, the given
    first one included as CropMAE's VIP evaluation scores it, adds to one confusion matrix
    (:mod:`eqbench.protocols.video.parsing_metrics`): ``miou`` is the mean IoU over the classes
    present, ``pixel_acc`` the share of pixels right; ``*_copy_first`` score copying the first
    annotation to every frame.
    """

    metrics = ("miou", "pixel_acc", "miou_copy_first", "pixel_acc_copy_first")
    units = dict.fromkeys(metrics, "percent")

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: VideoPropagationConfig = config
        scores, copied = PartIoU(), PartIoU()
        for _, gt, first, pred in propagated_videos(ctx, cfg):
            scores.add(gt, pred)
            copied.add(gt, np.broadcast_to(first, gt.shape))
        return {
            **{k: [v] for k, v in scores.summary().items()},
            **{f"{k}_copy_first": [v] for k, v in copied.summary().items()},
        }
