"""Videos with per-frame object masks: the base class of ``davis`` and the built-in ``clips``.

A :class:`VideoDataset` is an :class:`~eqbench.data.base.ImageDataset` whose items are the frames
of all its videos in order (``labels`` and ``groups`` are the video index of each frame), so the
image protocols and the feature store can address frames one by one. Video protocols read whole
videos at their stored resolution instead: :meth:`VideoDataset.frames` ``(T, H, W, 3)`` uint8 and
:meth:`VideoDataset.masks` ``(T, H, W)`` object ids (0 = background, 255 = void).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from eqbench.data.base import ImageDataset, resize_square


class VideoDataset(ImageDataset):
    """A split of annotated videos.

    Attributes:
        videos: video names, in order.
        lengths: number of frames of each video.
    """

    videos: list[str]
    lengths: list[int]

    def _index(self) -> None:
        """Set ``labels``, ``groups`` and ``classes`` from ``videos`` and ``lengths``."""
        self.labels = np.repeat(np.arange(len(self.videos), dtype=np.int64), self.lengths)
        self.groups = self.labels.copy()
        self.classes = list(self.videos)
        self._starts = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    @abstractmethod
    def frame(self, video: int, t: int) -> np.ndarray:
        """Frame ``t`` of video ``video`` at its stored size, ``(H, W, 3)`` uint8."""

    @abstractmethod
    def mask(self, video: int, t: int) -> np.ndarray:
        """The annotation of frame ``t`` of video ``video``, ``(H, W)`` int64 object ids."""

    def frames(self, video: int) -> np.ndarray:
        """Every frame of a video, ``(T, H, W, 3)`` uint8."""
        return np.stack([self.frame(video, t) for t in range(self.lengths[video])])

    def masks(self, video: int) -> np.ndarray:
        """Every annotation of a video, ``(T, H, W)`` int64."""
        return np.stack([self.mask(video, t) for t in range(self.lengths[video])])

    def load(self, indices: Sequence[int], size: int) -> Tensor:
        """Frames by global index, each resized to ``size × size`` (the image interface)."""
        out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        for row, i in enumerate(indices):
            video = int(np.searchsorted(self._starts, int(i), side="right") - 1)
            image = self.frame(video, int(i) - int(self._starts[video]))
            pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
            out[row] = resize_square(pixels, size)[0]
        return out
