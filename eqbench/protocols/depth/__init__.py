"""Monocular depth from frozen patch tokens: dinov2's linear and DPT depth heads (paper Table 6).

Each image is resized so its shorter side is ``image_size`` and its longer side in proportion
(floored to the encoder's patch multiple, as the video task); the frozen encoder's patch tokens
of the last block (``layers=1``, dinov2's "lin. 1") or of four evenly spaced blocks
(``layers=4``, "lin. 4"), each with the CLS token concatenated, feed dinov2's linear head
(:mod:`eqbench.protocols.depth.head`), trained on the train split with SigLoss + gradient loss
against the ground truth resized (nearest) to the head's output size (the token grid × ``upsample``;
dinov2 compares at the training crop's full size, 16× more pixels at ×4, too slow for a CPU). On the
test split the prediction is resized bilinearly to each ground-truth map's stored size and
scored there with the dataset's conventions (valid depth range, eigen or Garg crop;
:mod:`eqbench.protocols.depth.metrics`): RMSE, AbsRel, log10, δ1-δ3, means over images. Predicting
the training split's mean depth everywhere is scored beside it (``*_mean_depth``), with
``rmse_margin`` = its RMSE minus the head's: the trivial reference a representation must beat.

``depth_dpt`` is the same task with dinov2's DPT head (:mod:`eqbench.protocols.depth.dpt`) on the
tokens of four evenly spaced blocks in place of the linear head; the loss compares at its output
size, 16× the token grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eqbench.data.base import DatasetSpec
from eqbench.data.depth import DepthDataset
from eqbench.device import autocast
from eqbench.errors import ConfigError, DatasetError
from eqbench.features.store import FeatureStore
from eqbench.progress import progress_bar
from eqbench.protocols.base import PROTOCOLS, EvalContext, MetricValues, Protocol, open_split
from eqbench.protocols.depth.dpt import READOUTS, DPTDepthHead
from eqbench.protocols.depth.head import (
    NORM_STRATEGIES,
    HeadTrainingOptions,
    LinearDepthHead,
    train_depth_head,
)
from eqbench.protocols.depth.metrics import CROPS, ERRORS, DepthScores
from eqbench.protocols.video import encoded_size, size_multiple_of


@dataclass(frozen=True)
class DepthLinearConfig(HeadTrainingOptions):
    """Options of the linear depth task.

    Attributes:
        image_size: shorter side of the images fed to the encoder.
        n_train / n_test: images per split (``None``: the whole split).
        layers: 1 (last block) or 4 (four evenly spaced blocks, timm ViTs).
        use_cls: concatenate the CLS token to every patch token (dinov2: yes).
        classify: depth as the expectation over ``n_bins`` uniform bins (dinov2), else
            regression.
        n_bins / norm_strategy / upsample: the head
            (:class:`~eqbench.protocols.depth.head.LinearDepthHead`).
        max_depth: top of the bins and of the scored range (``None``: the dataset's cap, 10 m
            for NYU and the built-in scenes, 80 m for KITTI).
        crop: evaluation crop (``None``: the dataset's, eigen for NYU, garg for KITTI).
        iterations / batch_size / lr / weight_decay / grad_loss_weight: head training
            (:class:`~eqbench.protocols.depth.head.DepthTraining`).
        probe_seeds: heads trained with seeds ``seed, seed + 1, ...``.
    """

    image_size: int = 96
    n_train: int | None = 400
    n_test: int | None = 100
    layers: int = 1
    use_cls: bool = True
    classify: bool = True
    n_bins: int = 256
    norm_strategy: str = "linear"
    upsample: int = 4
    max_depth: float | None = None
    crop: str | None = None
    iterations: int = 1000
    batch_size: int = 16
    lr: float = 5e-3
    weight_decay: float = 0.01
    grad_loss_weight: float = 0.5
    probe_seeds: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        if self.layers not in (1, 4):
            raise ValueError("layers must be 1 or 4 (dinov2's lin. 1 and lin. 4)")
        if self.norm_strategy not in NORM_STRATEGIES:
            raise ValueError(f"norm_strategy must be one of {NORM_STRATEGIES}")
        if self.crop is not None and self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS} or null")
        if min(self.iterations, self.batch_size, self.probe_seeds, self.n_bins, self.upsample) < 1:
            raise ValueError("iterations, batch_size, probe_seeds, n_bins, upsample must be >= 1")
        if self.max_depth is not None and self.max_depth <= 0:
            raise ValueError("max_depth must be positive")


@dataclass(frozen=True)
class DepthDPTConfig(HeadTrainingOptions):
    """Options of the DPT depth task: those of :class:`DepthLinearConfig` without ``layers``
    (always four), ``use_cls`` and ``upsample`` (the architecture's ×16), plus the head's.

    Attributes:
        readout: the CLS token is ``ignore``d, ``add``ed to every patch token, or concatenated
            and ``project``ed (dinov2).
        channels: width of the fusion stages (dinov2: 256; the CPU default is smaller).
        classify: bins as the linear head (an option here), else regression (dinov2's DPT).
        scale_up: regression as ``sigmoid · max_depth`` (dinov2's option) in place of
            ``ReLU + min_depth``.
    """

    image_size: int = 96
    n_train: int | None = 400
    n_test: int | None = 100
    readout: str = "project"
    channels: int = 64
    classify: bool = False
    n_bins: int = 256
    norm_strategy: str = "linear"
    scale_up: bool = True
    max_depth: float | None = None
    crop: str | None = None
    iterations: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_loss_weight: float = 0.5
    probe_seeds: int = 1

    layers: ClassVar[int] = 4

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}")
        if self.norm_strategy not in NORM_STRATEGIES:
            raise ValueError(f"norm_strategy must be one of {NORM_STRATEGIES}")
        if self.crop is not None and self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS} or null")
        if min(self.iterations, self.batch_size, self.probe_seeds, self.n_bins) < 1:
            raise ValueError("iterations, batch_size, probe_seeds, n_bins must be >= 1")
        if self.channels < 2:
            raise ValueError("channels must be at least 2")
        if self.max_depth is not None and self.max_depth <= 0:
            raise ValueError("max_depth must be positive")

    @property
    def use_cls(self) -> bool:
        """Whether the head reads the CLS token."""
        return self.readout != "ignore"


#: Either task's config; both name the layers read and whether the CLS token is.
DepthConfig = DepthLinearConfig | DepthDPTConfig
DepthHead = LinearDepthHead | DPTDepthHead


def open_depth(dataset: DatasetSpec, split: str, n: int | None, seed: int) -> DepthDataset:
    """A split of ``dataset``, which must have depth maps."""
    lacking = "depth maps. Use depth_scenes (built-in), nyu:PATH or kitti:PATH."
    return open_split(dataset, split, n, seed, DepthDataset, lacking)


@torch.inference_mode()
def token_maps(store: FeatureStore, images: Tensor, layers: int, use_cls: bool) -> Tensor:
    """The head's input ``(B, C, h, w)`` (float32, on ``store.device``) for float images
    ``(B, 3, H, W)`` in [0, 1]: per layer the patch-token map, followed by the CLS token (the
    mean patch token for models without one) broadcast over the grid (dinov2 ``BNHead.
    _forward_feature``), layers concatenated along channels."""
    with autocast(store.device):
        outs = store.encoder.forward_layers(images.to(store.device), layers)
    parts = []
    for out in outs:
        h, w = out.grid
        parts.append(out.patch_map().float())
        if use_cls:
            cls = out.pooled("cls").float()  # (B, D')
            parts.append(cls[:, :, None, None].expand(-1, -1, h, w))
    return torch.cat(parts, dim=1)


def image_batch(samples: list[np.ndarray], size: tuple[int, int]) -> Tensor:
    """uint8 images ``(H, W, 3)`` as float ``(B, 3, *size)`` in [0, 1] (antialiased bilinear)."""
    out = []
    for image in samples:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(x.clamp(0, 255).div(255.0))
    return torch.cat(out)


def depth_at(depth: np.ndarray, size: tuple[int, int]) -> Tensor:
    """A depth map ``(H, W)`` resized to ``size`` by nearest neighbour (no invented depths)."""
    d = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    if tuple(d.shape[-2:]) != size:
        d = F.interpolate(d, size=size, mode="nearest-exact")
    return d[0, 0]


def encode_train(
    store: FeatureStore, data: DepthDataset, size: tuple[int, int], cfg: DepthConfig
) -> tuple[Tensor, Tensor]:
    """Features ``(N, C, h, w)`` on the CPU and ground truth ``(N, *size)`` of a split."""
    feats: list[Tensor] = []
    depths: list[Tensor] = []
    for lo in range(0, len(data), store.batch_size):
        samples = [data.sample(i) for i in range(lo, min(lo + store.batch_size, len(data)))]
        feats.append(token_maps(store, image_batch([s[0] for s in samples], size), cfg.layers,
                                cfg.use_cls).cpu())  # fmt: skip
        depths.extend(depth_at(s[1], size) for s in samples)
    return torch.cat(feats), torch.stack(depths)


@torch.inference_mode()
def score_test(
    store: FeatureStore,
    data: DepthDataset,
    size: tuple[int, int],
    heads: list[DepthHead],
    mean_depth: float,
    cfg: DepthConfig,
    scores: list[DepthScores],
    baseline: DepthScores,
) -> None:
    """Predict every test image with each head, resize to its ground truth and score it; score
    the constant ``mean_depth`` in ``baseline``."""
    with progress_bar("depth", store.show_progress) as progress:
        bar = progress.add_task(data.name, total=len(data))
        for lo in range(0, len(data), store.batch_size):
            samples = [data.sample(i) for i in range(lo, min(lo + store.batch_size, len(data)))]
            x = token_maps(store, image_batch([s[0] for s in samples], size), cfg.layers,
                           cfg.use_cls)  # fmt: skip
            for head, score in zip(heads, scores, strict=True):
                out = head(x)[:, None]  # (B, 1, h', w')
                for row, (_, gt) in enumerate(samples):
                    pred = F.interpolate(out[row : row + 1], size=gt.shape, mode="bilinear",
                                         align_corners=False)  # fmt: skip
                    score.add(gt, pred[0, 0].cpu().numpy())
            for _, gt in samples:
                baseline.add(gt, np.full(gt.shape, mean_depth, dtype=np.float32))
            progress.advance(bar, len(samples))


#: RMSE in metres, AbsRel and log10 plain ratios, the δ thresholds fractions of pixels.
UNITS_BY_ERROR = dict(
    rmse="m", abs_rel="score", log10="score", delta1="percent", delta2="percent", delta3="percent"
)


@PROTOCOLS.register("depth_linear")
class DepthLinear(Protocol):
    """dinov2's linear depth head on frozen patch (+ CLS) tokens; RMSE, AbsRel, log10, δ."""

    Config: ClassVar[type] = DepthLinearConfig
    metrics = (
        *ERRORS,
        *(f"{name}_mean_depth" for name in ERRORS),
        "rmse_margin",
    )
    units: ClassVar[dict[str, str]] = {
        **{f"{e}{s}": u for e, u in UNITS_BY_ERROR.items() for s in ("", "_mean_depth")},
        "rmse_margin": "m",
    }
    lower_is_better = frozenset(
        f"{e}{s}" for e in ("rmse", "abs_rel", "log10") for s in ("", "_mean_depth")
    )

    def make_head(self, config: Any, in_dim: int, max_depth: float) -> DepthHead:
        """An untrained head for features of ``in_dim`` channels."""
        cfg: DepthLinearConfig = config
        return LinearDepthHead(
            in_dim,
            min_depth=1e-3,
            max_depth=max_depth,
            classify=cfg.classify,
            n_bins=cfg.n_bins,
            norm_strategy=cfg.norm_strategy,
            upsample=cfg.upsample,
        )

    def preflight(self, config: Any, dataset: DatasetSpec, seed: int, primary_metric: str) -> None:
        cfg: DepthConfig = config
        open_depth(dataset, "train", cfg.n_train, seed)
        open_depth(dataset, "test", cfg.n_test, seed)

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        cfg: DepthConfig = config
        train = open_depth(ctx.dataset, "train", cfg.n_train, ctx.seed)
        test = open_depth(ctx.dataset, "test", cfg.n_test, ctx.seed)
        height, width = train.sample(0)[1].shape
        multiple = size_multiple_of(ctx.store)
        size = encoded_size(height, width, cfg.image_size, multiple, multiple)
        max_depth = train.max_depth if cfg.max_depth is None else cfg.max_depth
        crop = test.crop if cfg.crop is None else cfg.crop
        feats, depth = encode_train(ctx.store, train, size, cfg)
        heads = []
        for i in range(cfg.probe_seeds):
            torch.manual_seed(ctx.seed + i)
            heads.append(self.make_head(cfg, int(feats.shape[1]), max_depth))
        target = heads[0].output_size((int(feats.shape[-2]), int(feats.shape[-1])))
        depth = F.interpolate(depth[:, None], size=target, mode="nearest-exact")[:, 0]
        valid = depth > 0  # SigLoss's valid_mask: ground truth > 0
        if not bool(valid.any()):
            raise DatasetError(
                f"The train split of '{ctx.dataset}' has no pixel with depth > 0. Check that "
                "the depth maps are 16-bit PNGs in the dataset's units."
            )
        mean_depth = float(depth[valid].double().mean())
        for i, head in enumerate(heads):
            train_depth_head(
                head, feats, depth, valid, cfg.training(), ctx.seed + i, ctx.store.device
            )
        scores = [DepthScores(test.min_depth, max_depth, crop) for _ in heads]
        baseline = DepthScores(test.min_depth, max_depth, crop)
        score_test(ctx.store, test, size, heads, mean_depth, cfg, scores, baseline)
        out: MetricValues = {name: [] for name in ERRORS}
        for score in scores:
            for name, value in score.summary().items():
                out[name].append(value)
        for name, value in baseline.summary().items():
            out[f"{name}_mean_depth"] = [value]
        out["rmse_margin"] = [out["rmse_mean_depth"][0] - v for v in out["rmse"]]
        return out


@PROTOCOLS.register("depth_dpt")
class DepthDPT(DepthLinear):
    """dinov2's DPT depth head on frozen tokens of four blocks; metrics as ``depth_linear``."""

    Config = DepthDPTConfig

    def run(self, config: Any, ctx: EvalContext) -> MetricValues:
        try:
            return super().run(config, ctx)
        except ConfigError as err:  # raised by the first batch, before any training
            if "intermediate layers" not in str(err) and "cannot read" not in str(err):
                raise
            raise ConfigError(
                f"depth/dpt reads four blocks, which backbone '{ctx.model.model_id}' cannot "
                "return (it needs a timm ViT with at least 4 blocks). Use depth/linear for "
                "this backbone."
            ) from err

    def make_head(self, config: Any, in_dim: int, max_depth: float) -> DepthHead:
        cfg: DepthDPTConfig = config
        embed_dim = in_dim // (cfg.layers * (2 if cfg.use_cls else 1))
        return DPTDepthHead(
            embed_dim,
            min_depth=1e-3,
            max_depth=max_depth,
            channels=cfg.channels,
            readout=cfg.readout,
            classify=cfg.classify,
            n_bins=cfg.n_bins,
            norm_strategy=cfg.norm_strategy,
            scale_up=cfg.scale_up,
            layers=cfg.layers,
        )
