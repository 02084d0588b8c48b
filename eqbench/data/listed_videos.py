"""Videos named in a list file, each a folder of frames beside a folder of annotations.

The common part of ``davis`` and ``vip``: :func:`pair_annotations` checks that every frame of a
listed video has its annotation, and :class:`ListedVideos` keeps the first ``n`` listed videos and
reads their frames. Nothing is decoded when the dataset is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eqbench.data.dense import names_digest, read_rgb
from eqbench.data.video import VideoDataset
from eqbench.errors import DatasetError


def pair_annotations(
    frames: list[Path], frame_dir: Path, mask_dir: Path, name: str, noun: str, listing: str
) -> tuple[list[Path], list[Path]]:
    """The frames of a listed video and their ``.png`` annotations, checked to pair up.

    Args:
        frames: the video's ``.jpg`` frames in order (empty when ``frame_dir`` is missing).
        frame_dir: the folder of the frames.
        mask_dir: the folder of the annotations, one ``<frame stem>.png`` a frame.
        name: the video's name in the list.
        noun: what the dataset calls a video (``sequence``, ``video``), for the messages.
        listing: the list file, as the messages name it.
    """
    if not frames:
        raise DatasetError(
            f"'{listing}' lists '{name}' but '{frame_dir}' holds no .jpg frames. Restore "
            f"the {noun}'s frames or remove it from the list."
        )
    if not mask_dir.is_dir():
        raise DatasetError(
            f"{noun.capitalize()} '{name}' has no annotation folder '{mask_dir}'. Restore its "
            "annotations or remove it from the list."
        )
    masks = [mask_dir / f"{frame.stem}.png" for frame in frames]
    missing = [m.name for m in masks if not m.is_file()]
    if missing:
        raise DatasetError(
            f"{noun.capitalize()} '{name}' has {len(missing)} frame(s) without an annotation "
            f"(e.g. '{mask_dir / missing[0]}'); every frame needs one. Restore the annotations "
            f"or remove the {noun} from the list."
        )
    return frames, masks


class ListedVideos(VideoDataset):
    """Videos named in a list file, their frames and annotations as files.

    Attributes:
        root: the dataset's folder.
        version: the loader's version (fingerprint).
        noun: what the dataset calls a video (``sequence``, ``video``).
        total: number of videos in the list.
        n: the number of videos kept, or ``None`` when all are.
        files: the frames and the annotations of each kept video.
    """

    root: Path
    version: int
    noun: str
    total: int
    n: int | None
    files: list[tuple[list[Path], list[Path]]]

    def _keep(
        self,
        names: list[str],
        n: int | None,
        noun: str,
        files: Callable[[str], tuple[list[Path], list[Path]]],
    ) -> None:
        """Keep the first ``n`` of the listed ``names`` (all when ``None``), with their ``files``.

        ``noun`` is what the dataset calls a video, for the messages and the fingerprint.
        """
        if n is not None and n < 0:
            raise DatasetError(f"Number of {noun}s must be >= 0, got {n}.")
        self.noun = noun
        self.total = len(names)
        self.n = n if n is not None and n < len(names) else None
        self.videos = names if self.n is None else names[: self.n]
        self.files = [files(name) for name in self.videos]
        self.lengths = [len(frames) for frames, _ in self.files]
        self._index()

    def frame(self, video: int, t: int) -> np.ndarray:
        return read_rgb(self.files[video][0][t])

    def _same_size_masks(self, video: int, remedy: str) -> list[np.ndarray]:
        """Every annotation of ``video``, checked to be of one size; ``remedy`` ends the message
        when they are not."""
        masks = [self.mask(video, t) for t in range(self.lengths[video])]
        shapes = {m.shape for m in masks}
        if len(shapes) > 1:
            raise DatasetError(
                f"The annotations of '{self.videos[video]}' differ in size ({sorted(shapes)}). "
                f"{remedy}"
            )
        return masks

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            f"{self.noun}s": self.total,
            "frames": int(sum(self.lengths)),
            "names_sha256": names_digest(self.videos),
            "n": self.n,
            "version": self.version,
        }
