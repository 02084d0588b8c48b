"""``gtsa``: the Geometric Transformation Sensitive Architecture.

Kim, "Self-Supervised Learning from Non-Object Centric Images with a Geometric Transformation
Sensitive Architecture", arXiv 2304.08014; official code ``bok3948/GTSA``
(``model_pretrain/gtsa.py``, ``util/gtsa_transforms.py``, ``engine_pretrain.py``).

* views (:mod:`eqbench.methods.gtsa_views`): two global and ``n_local`` local crops, re-sampled
  until they overlap the global crops, colour jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale p 0.2,
  blur p 0.2, no flip, then each crop rotated by its own random ``k·90°``;
* student: backbone patch tokens (the CLS token is dropped) as a map → :class:`ConvHead`
  projector (two ``[3×3 conv → channel LayerNorm → GELU]`` blocks, residual where the widths
  match, then a 1×1 conv) → :class:`ConvHead` predictor (one block, no residual, 1×1 conv);
  teacher: an EMA copy of backbone and projector (:class:`EMATeacher`, momentum scheduled by the
  engine, 0.996 → 1 cosine in the paper); the teacher sees the global crops, the student all;
* for every (teacher global crop, other student crop) pair: the crop loss
  :func:`~eqbench.losses.region_loss` and the patch-correspondence loss
  :func:`~eqbench.losses.patch_correspondence_loss`, each averaged over the pairs;
* rotation loss: an MLP (:func:`rotation_head`) on the mean student patch token of every crop
  predicts its ``k`` (cross-entropy, averaged over crops);
* ``L = L_crop + w_pc·L_pc + w_rot·L_rot`` with ``w_pc = 0.5`` after a warm-up without it
  (:func:`~eqbench.losses.correspondence_weight`) and ``w_rot = 0.5``.

**eqbench defaults** (CPU-sized; ``gtsa_vits16_imagenet.yaml`` sets the paper's values): projector
width = backbone width (paper 384 = ViT-S), output and predictor width 384 (paper 768), rotation MLP
384-384-128 (paper 768-768-128), two local crops (paper 8); RoI grids and kept matches scale the
paper's (10 of a 14×14 map and 4 of 6×6; 98 of 196 and 18 of 36 tokens) to the actual grids,
RoI grids at least 2×2; the correspondence warm-up counts steps (paper: 10 epochs; the official
code switches it on after epoch 10, i.e. from the twelfth epoch). The checkpoint's backbone is the
student's, as in DINO; the teacher's is saved beside it by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.losses import correspondence_weight, patch_correspondence_loss, region_loss
from eqbench.methods.augment import LocalCropConfig, MultiCropAugment, build_augment_config
from eqbench.methods.base import Method, TrainBatch, register_method, split_options
from eqbench.methods.gtsa_views import N_GLOBAL, GTSACrops, GTSAViews
from eqbench.methods.teacher import EMATeacher

#: GTSA's crops (official ``GTSATransforms``): global scale 0.3–1, SimCLR-strength jitter, blur
#: p 0.2, no flip, no solarisation.
GTSA_AUGMENT: dict[str, Any] = {
    "crop_scale": [0.3, 1.0],
    "flip_p": 0.0,
    "jitter_p": 0.8,
    "brightness": 0.8,
    "contrast": 0.8,
    "saturation": 0.8,
    "hue": 0.2,
    "grayscale_p": 0.2,
    "blur_p": [0.2, 0.2],
    "solarize_p": [0.0, 0.0],
}
#: GTSA's local crops: scale 0.1–0.3, the same blur p 0.2.
GTSA_LOCAL: dict[str, Any] = {
    "local_crop_scale": [0.1, 0.3],
    "local_blur_p": 0.2,
    "local_solarize_p": 0.0,
}
#: The paper's RoI grid sides and kept matches per map side (ViT-S/16: 14×14 global, 6×6 local).
PAPER_GRIDS = (14, 6)
PAPER_ROI_SIZES = (10, 4)
PAPER_MATCHES = (98, 18)


@dataclass
class GTSAOptions:
    """Options of GTSA; the local crops' are :class:`LocalCropConfig`'s (GTSA's defaults).

    Attributes:
        projector_dim: projector width (paper 384); ``None``: the backbone's width.
        out_dim: projector and predictor output width (paper 768; eqbench default 384).
        predictor_dim: predictor width (paper 768); ``None``: ``out_dim``.
        projector_blocks: conv blocks of the projector (paper 2).
        predictor_blocks: conv blocks of the predictor (paper 1).
        roi_sizes: RoI grid sides ``[global, local]`` by the student crop (paper ``[10, 4]``);
            ``None``: the paper's fractions of the actual grids, at least 2.
        num_matches: kept correspondences ``[global, local]`` by the student crop (paper
            ``[98, 18]``); ``None``: the paper's fractions (half the student tokens), at least 1.
        pc_weight: weight of the patch-correspondence loss after its warm-up (paper 0.5).
        pc_warmup_steps: steps without it (paper: 10 epochs; eqbench default 25, a tenth of
            the CPU budget as in the paper).
        rotation_weight: weight of the rotation loss (paper 0.5).
        rotation_dims: hidden widths of the rotation MLP (paper 768, 768, 128).
        min_overlap: least image fraction a local crop shares with each global crop (official
            code 0.01; twice that between the global crops).
        augment: overrides of the global crops' :class:`~eqbench.methods.AugmentConfig`.
    """

    projector_dim: int | None = None
    out_dim: int = 384
    predictor_dim: int | None = None
    projector_blocks: int = 2
    predictor_blocks: int = 1
    roi_sizes: tuple[int, int] | None = None
    num_matches: tuple[int, int] | None = None
    pc_weight: float = 0.5
    pc_warmup_steps: int = 25
    rotation_weight: float = 0.5
    rotation_dims: list[int] = field(default_factory=lambda: [384, 384, 128])
    min_overlap: float = 0.01
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        widths = [self.out_dim, self.projector_dim or 1, self.predictor_dim or 1]
        if min(widths) < 1 or min(self.projector_blocks, self.predictor_blocks) < 1:
            raise ConfigError("GTSA widths and block counts must be >= 1.")
        if self.roi_sizes is not None and min(self.roi_sizes) < 1:
            raise ConfigError("GTSA roi_sizes must be >= 1.")
        if self.num_matches is not None and min(self.num_matches) < 1:
            raise ConfigError("GTSA num_matches must be >= 1.")
        if min(self.pc_weight, self.rotation_weight, self.pc_warmup_steps) < 0:
            raise ConfigError("GTSA loss weights and pc_warmup_steps must be >= 0.")
        if not self.rotation_dims or min(self.rotation_dims) < 1:
            raise ConfigError("GTSA rotation_dims must be a non-empty list of positive ints.")
        if not 0 <= self.min_overlap < 0.5:
            raise ConfigError("GTSA min_overlap must lie in [0, 0.5).")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a ``(B, C, h, w)`` map, without affine parameters."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, elementwise_affine=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvHead(nn.Module):
    """GTSA's projector and predictor: ``blocks × [3×3 conv → channel LayerNorm → GELU]`` (each
    block added to its input where the widths match, if ``residual``), then a 1×1 conv.

    Args:
        in_dim: input channels.
        hidden_dim: channels of the blocks.
        out_dim: output channels.
        blocks: number of blocks.
        residual: residual connections (the projector's; the predictor has none).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, blocks: int, residual: bool
    ) -> None:
        super().__init__()
        self.residual = residual
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_dim if i == 0 else hidden_dim, hidden_dim, 3, padding=1),
                ChannelLayerNorm(hidden_dim),
                nn.GELU(),
            )
            for i in range(blocks)
        )
        self.proj = nn.Conv2d(hidden_dim, out_dim, 1)
        for module in self.modules():  # the official initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.02)
                assert module.bias is not None
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim, h, w)`` → ``(B, out_dim, h, w)``."""
        for block in self.blocks:
            y = block(x)
            x = x + y if self.residual and y.shape == x.shape else y
        return self.proj(x)


def rotation_head(in_dim: int, dims: list[int], classes: int = 4) -> nn.Sequential:
    """``[Linear → LayerNorm → GELU]`` per hidden width but the last, then ``Linear →
    LayerNorm → Linear`` to ``classes`` (official: 384-768-768-128-4)."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in dims[:-1]:
        layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU()]
        width = hidden
    layers += [nn.Linear(width, dims[-1]), nn.LayerNorm(dims[-1]), nn.Linear(dims[-1], classes)]
    return nn.Sequential(*layers)


def token_map(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Row-major patch tokens ``(B, N, D)`` → map ``(B, D, h, w)``."""
    b, _, d = tokens.shape
    return tokens.transpose(1, 2).reshape(b, d, *grid)


def scaled(paper: int, paper_grid: int, grid: int, power: int, least: int) -> int:
    """``paper`` scaled from a ``paper_grid`` side to a ``grid`` side (``power`` 1: sides, 2:
    token counts), rounded, at least ``least``."""
    return max(least, round(paper * (grid / paper_grid) ** power))


class GTSA(Method):
    """GTSA (arXiv 2304.08014).

    Args:
        encoder: the student backbone (a ViT: its patch tokens form the map).
        img_size: side of the global crops.
        options: GTSA's options.
        local: the local crops' options.
    """

    has_teacher = True

    def __init__(
        self, encoder: Encoder, img_size: int, options: GTSAOptions, local: LocalCropConfig
    ) -> None:
        super().__init__()
        self.name = "gtsa"
        self.encoder = encoder
        self.opts = options
        config = build_augment_config(options.augment, GTSA_AUGMENT)
        if config.flip_p != 0:
            raise ConfigError("GTSA's overlap boxes assume unflipped crops: set augment.flip_p 0.")
        augment = MultiCropAugment(config, local, img_size, encoder.patch_size)
        self.views = GTSAViews(augment, options.min_overlap)
        global_grid = img_size // encoder.patch_size
        local_grid = augment.local_size // encoder.patch_size
        self.roi_sizes: tuple[int, int] = options.roi_sizes or (
            scaled(PAPER_ROI_SIZES[0], PAPER_GRIDS[0], global_grid, 1, 2),
            scaled(PAPER_ROI_SIZES[1], PAPER_GRIDS[1], local_grid, 1, 2),
        )
        self.num_matches: tuple[int, int] = options.num_matches or (
            scaled(PAPER_MATCHES[0], PAPER_GRIDS[0], global_grid, 2, 1),
            scaled(PAPER_MATCHES[1], PAPER_GRIDS[1], local_grid, 2, 1),
        )
        width = encoder.embed_dim
        hidden = options.projector_dim or width
        self.projector = ConvHead(width, hidden, options.out_dim, options.projector_blocks, True)
        self.predictor = ConvHead(
            options.out_dim,
            options.predictor_dim or options.out_dim,
            options.out_dim,
            options.predictor_blocks,
            residual=False,
        )
        self.rotation = rotation_head(width, options.rotation_dims)
        self.teacher = EMATeacher({"encoder": encoder, "projector": self.projector})
        self.options = {
            **to_dict(options),
            "roi_sizes": list(self.roi_sizes),
            "num_matches": list(self.num_matches),
            "augment": augment.describe(),
        }

    def update_teacher(self, momentum: float) -> None:
        """EMA step of the teacher's backbone and projector (called by the engine)."""
        self.teacher.ema_update({"encoder": self.encoder, "projector": self.projector}, momentum)

    def student(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(predicted map (M, C, h, w), mean patch token (M, D))`` of a batch of crops."""
        features = self.encoder(images)
        pooled = features.patch.mean(dim=1)  # (M, D), no CLS
        return self.predictor(self.projector(token_map(features.patch, features.grid))), pooled

    @torch.no_grad()
    def teacher_maps(self, images: Tensor) -> Tensor:
        """Projected teacher map ``(M, C, h, w)`` of a batch of (global) crops."""
        features = self.teacher["encoder"](images)
        return self.teacher["projector"](token_map(features.patch, features.grid))

    def pair_losses(
        self, crops: GTSACrops, students: list[Tensor], teachers: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Crop and patch-correspondence losses averaged over every (teacher, other) pair."""
        crop_terms, pc_terms = [], []
        for t, teacher in enumerate(teachers):
            for v, student in enumerate(students):
                if v == t:
                    continue
                kind = 0 if v < N_GLOBAL else 1
                crop_terms.append(
                    region_loss(
                        student,
                        teacher,
                        crops.overlap(v, t),
                        crops.overlap(t, v),
                        crops.turns[v] - crops.turns[t],
                        self.roi_sizes[kind],
                        spatial_scale=student.shape[-1] / crops.sizes[v],
                    )
                )
                pc_terms.append(
                    patch_correspondence_loss(
                        student.flatten(2).mT, teacher.flatten(2).mT, self.num_matches[kind]
                    )
                )
        return torch.stack(crop_terms).mean(), torch.stack(pc_terms).mean()

    @property
    def trained_feature(self) -> str | None:
        """``avgpool``: GTSA drops the CLS token and trains the patch-token map."""
        return "avgpool"

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """Crops → teacher maps of the global crops, student maps of all → the three losses."""
        crops = self.views(batch.images, batch.generator)
        n = batch.images.shape[0]
        global_maps, global_pooled = self.student(torch.cat(crops.globals))  # (2B, C, h, w)
        students, pooled = list(global_maps.chunk(N_GLOBAL)), [global_pooled]
        if crops.locals:  # one pass for all local crops (same size)
            local_maps, local_pooled = self.student(torch.cat(crops.locals))
            students += list(local_maps.chunk(len(crops.locals)))
            pooled.append(local_pooled)
        teachers = list(self.teacher_maps(torch.cat(crops.globals)).chunk(N_GLOBAL))
        logits = self.rotation(torch.cat(pooled)).float()  # (V·B, 4), crops in view order
        labels = crops.turns.reshape(-1).to(logits.device)  # (V·B,)
        with torch.autocast(logits.device.type, enabled=False):  # cosines and RoIs in fp32
            crop_loss, pc_loss = self.pair_losses(
                crops, [s.float() for s in students], [t.float() for t in teachers]
            )
            rotation_loss = F.cross_entropy(logits, labels)
        pc_weight = correspondence_weight(
            batch.step, self.opts.pc_weight, self.opts.pc_warmup_steps
        )
        loss = crop_loss + pc_weight * pc_loss + self.opts.rotation_weight * rotation_loss
        assert labels.shape[0] == n * len(students)
        return {
            "loss": loss,
            "crop": crop_loss,
            "correspondence": pc_loss,
            "rotation": rotation_loss,
            "rotation_acc": (logits.argmax(dim=1) == labels).float().mean().detach(),
            "pc_weight": loss.new_tensor(pc_weight),
        }


@register_method(
    "gtsa",
    paper="GTSA: Kim, arXiv 2304.08014",
    test_options={"out_dim": 32, "rotation_dims": [16, 8]},
)
def gtsa(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """GTSA (arXiv 2304.08014): rotated overlapping crops, crop, correspondence and rotation
    losses on the patch-token map."""
    where = "method 'gtsa' options"
    parts = split_options(options, [GTSAOptions, LocalCropConfig], where)
    local = from_dict(LocalCropConfig, {**GTSA_LOCAL, **parts[1]}, where)
    return GTSA(encoder, img_size, from_dict(GTSAOptions, parts[0], where), local)
