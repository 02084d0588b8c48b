"""2-D human pose from frozen patch tokens: ViTPose's heatmap decoders, PCKh (paper Table 6).

Each person is cut out top-down (:func:`~eqbench.data.pose.crop_person`: the box ``scale × 200
× 1.25`` around its centre, resized to ``image_size``), the frozen encoder's last-block patch
tokens form a map ``(D, h, w)``, and ViTPose's ``simple`` or ``classic`` decoder
(:mod:`eqbench.protocols.pose.head`) turns it into 16 heatmaps of ``4h × 4w``, trained on the train
split with mmpose's keypoint MSE against ``MSRAHeatmap`` Gaussian targets (invisible joints weighted
0). On the test split the heatmaps are decoded (argmax, quarter-cell refinement), mapped back to
image pixels and scored by MPII's PCKh (:mod:`eqbench.protocols.pose.metrics`): ``pckh`` (@0.5, the
primary), ``pckh_01`` (@0.1) and the joint groups. Predicting the training split's mean pose
(each joint's mean position in the crop, over the people where it is visible) is scored beside
it (``pckh_mean_pose``), with ``pckh_margin`` = the head's PCKh minus it: the trivial reference a
representation must beat. Features are computed once per crop, so there is no training
augmentation (ViTPose flips, rotates and rescales) and no flip test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from eqbench.data.base import DatasetSpec
from eqbench.data.pose import NUM_JOINTS, Crop, PoseDataset, PoseSample, crop_person
from eqbench.device import autocast
from eqbench.errors import DatasetError
from eqbench.features.store import FeatureStore
from eqbench.progress import progress_bar
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol, open_split
from eqbench.protocols.pose.head import DECODERS, PoseHead, PoseTraining, train_pose_head
from eqbench.protocols.pose.metrics import SCORES, PCKhScores, decode_heatmaps


@dataclass(frozen=True)
class PoseConfig:
    """Options of the pose task.

    Attributes:
        image_size: side of the square person crop fed to the encoder (ViTPose: 256 × 192;
            mmpose's MPII configs: 256 × 256).
        n_train / n_test: people per split (``None``: the whole split).
        decoder: ``simple`` (ReLU, bilinear ×4, 3×3 conv) or ``classic`` (2 deconvolutions).
        deconv_filters: channels of the classic decoder (ViTPose: 256).
        sigma: Gaussian of the heatmap targets, in heatmap cells (mmpose: 2 at 64 × 64).
        iterations / batch_size / lr / weight_decay: head training
            (:class:`~eqbench.protocols.pose.head.PoseTraining`).
        probe_seeds: heads trained with seeds ``seed, seed + 1, ...``.
    """

    image_size: int = 128
    n_train: int | None = 400
    n_test: int | None = 100
    decoder: str = "simple"
    deconv_filters: int = 256
    sigma: float = 2.0
    iterations: int = 1000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.0
    probe_seeds: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}")
        counts = (self.iterations, self.batch_size, self.probe_seeds, self.deconv_filters)
        if min(counts) < 1:
            raise ValueError("iterations, batch_size, probe_seeds, deconv_filters must be >= 1")
        if not 0 < self.sigma <= 64:
            raise ValueError("sigma must be in (0, 64] heatmap cells")
        if not 0 < self.lr <= 1:
            raise ValueError("lr must be in (0, 1]")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")

    def training(self) -> PoseTraining:
        return PoseTraining(
            iterations=self.iterations,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
        )


def open_pose(dataset: DatasetSpec, split: str, n: int | None, seed: int) -> PoseDataset:
    """A split of ``dataset``, which must have keypoints."""
    lacking = "keypoints. Use stick_figures (built-in) or mpii:PATH."
    return open_split(dataset, split, n, seed, PoseDataset, lacking)


@torch.inference_mode()
def token_map(store: FeatureStore, crops: list[Crop]) -> Tensor:
    """The last block's patch tokens ``(B, D, h, w)`` (float32, on ``store.device``) of crops."""
    images = np.stack([c.image for c in crops])  # (B, S, S, 3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).to(store.device)
    with autocast(store.device):
        out = store.encoder(x)
    return out.patch_map().float()


def batches(
    data: PoseDataset, size: int, batch: int
) -> Iterator[tuple[list[PoseSample], list[Crop]]]:
    """``(samples, crops)`` of ``data`` in batches of ``batch``."""
    for lo in range(0, len(data), batch):
        samples = [data.sample(i) for i in range(lo, min(lo + batch, len(data)))]
        yield samples, [crop_person(s, size) for s in samples]


def encode_train(
    store: FeatureStore, data: PoseDataset, cfg: PoseConfig
) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Token maps ``(N, D, h, w)`` on the CPU, joints ``(N, K, 2)`` in crop pixels, their
    visibility ``(N, K)``, and the mean pose ``(K, 2)`` in crop pixels (each joint over the
    people where it is visible; the crop centre for a joint never visible)."""
    feats: list[Tensor] = []
    joints: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    for samples, crops in batches(data, cfg.image_size, store.batch_size):
        feats.append(token_map(store, crops).cpu())
        for sample, crop in zip(samples, crops, strict=True):
            joints.append(crop.to_crop(sample.joints.astype(np.float64)))
            visible.append(np.asarray(sample.visible, dtype=bool))
    points, seen = np.stack(joints), np.stack(visible)  # (N, K, 2), (N, K)
    count = seen.sum(axis=0)
    mean_pose = np.full((NUM_JOINTS, 2), cfg.image_size / 2)
    total = (points * seen[..., None]).sum(axis=0)
    mean_pose[count > 0] = total[count > 0] / count[count > 0, None]
    inside = seen & (points > -0.5).all(axis=-1) & (points < cfg.image_size - 0.5).all(axis=-1)
    if not inside.any():
        raise DatasetError(
            f"The train split of '{data.name}' has no visible joint inside its person crops: "
            "nothing to train on. Check joints_vis, center and scale."
        )
    return torch.cat(feats), points, seen, mean_pose


def check_test_sample(sample: PoseSample, data: PoseDataset) -> None:
    """Refuse a test person PCKh cannot normalise (no positive head size)."""
    if not sample.head_size > 0:
        raise DatasetError(
            f"A test person of '{data.name}' has no head size ({sample.head_size}); PCKh divides "
            "by it. Give every test person a head box."
        )


@torch.inference_mode()
def score_test(
    store: FeatureStore,
    data: PoseDataset,
    heads: list[PoseHead],
    mean_pose: np.ndarray,
    cfg: PoseConfig,
    scores: list[PCKhScores],
    baseline: PCKhScores,
) -> None:
    """Predict every test person with each head, in image pixels, and score it; score the
    ``mean_pose`` (crop pixels) in ``baseline``."""
    size = (cfg.image_size, cfg.image_size)
    with progress_bar("pose", store.show_progress) as progress:
        bar = progress.add_task(data.name, total=len(data))
        for samples, crops in batches(data, cfg.image_size, store.batch_size):
            for sample in samples:
                check_test_sample(sample, data)
            x = token_map(store, crops)
            for head, score in zip(heads, scores, strict=True):
                pred = decode_heatmaps(head(x).float().cpu().numpy(), size)  # (B, K, 2) crop px
                for row, (sample, crop) in enumerate(zip(samples, crops, strict=True)):
                    guess = crop.to_image(pred[row].astype(np.float64))  # image pixels
                    score.add(guess, sample.joints, sample.visible, sample.head_size)
            for sample, crop in zip(samples, crops, strict=True):
                guess = crop.to_image(mean_pose)
                baseline.add(guess, sample.joints, sample.visible, sample.head_size)
            progress.advance(bar, len(samples))


@PROTOCOLS.register("pose_heatmap")
class PoseHeatmap(Protocol):
    """ViTPose's heatmap decoder on frozen patch tokens; MPII's PCKh."""

    Config = PoseConfig
    metrics = (*SCORES, "pckh_mean_pose", "pckh_margin")
    units: ClassVar[dict[str, str]] = dict.fromkeys(metrics, "percent")

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        cfg: PoseConfig = config
        open_pose(dataset, "train", cfg.n_train, seed)
        open_pose(dataset, "test", cfg.n_test, seed)

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: PoseConfig = config
        train = open_pose(ctx.dataset, "train", cfg.n_train, ctx.seed)
        test = open_pose(ctx.dataset, "test", cfg.n_test, ctx.seed)
        feats, joints, visible, mean_pose = encode_train(ctx.store, train, cfg)
        heads = []
        for i in range(cfg.probe_seeds):
            torch.manual_seed(ctx.seed + i)
            head = PoseHead(int(feats.shape[1]), NUM_JOINTS, cfg.decoder, cfg.deconv_filters)
            size = (cfg.image_size, cfg.image_size)
            trained = train_pose_head(
                head,
                feats,
                joints,
                visible,
                size,
                cfg.sigma,
                cfg.training(),
                ctx.seed + i,
                ctx.store.device,
            )
            heads.append(trained)
        scores = [PCKhScores() for _ in heads]
        baseline = PCKhScores()
        score_test(ctx.store, test, heads, mean_pose, cfg, scores, baseline)
        out: MetricValues = {name: [] for name in SCORES}
        for score in scores:
            for name, value in score.summary().items():
                out[name].append(value)
        out["pckh_mean_pose"] = [baseline.total()]
        out["pckh_margin"] = [v - out["pckh_mean_pose"][0] for v in out["pckh"]]
        return out
