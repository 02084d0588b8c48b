"""The DPT depth head (Ranftl et al. 2021, "Vision Transformers for Dense Prediction") on frozen
tokens of four layers, as dinov2's depth evaluation builds it.

Reference: facebookresearch/dinov2 ``dinov2/eval/depth/models/decode_heads/dpt_head.py`` (the
head) and ``dinov2/hub/depthers.py`` lines 167-177 (its settings: ``channels=256``,
``post_process_channels = [D/8, D/4, D/2, D]`` for token width ``D``, ``readout_type="project"``,
regression, blocks [2, 5, 8, 11] of a 12-block ViT, lines 203-208). The stages:

1. Reassemble (``ReassembleBlocks``, lines 47-121): per layer, the CLS token is ignored, added
   to every patch token, or concatenated to it and projected back to ``D`` by a linear layer +
   GELU ("project", lines 108-112); a 1×1 convolution to the stage's channels (line 118) and a
   resampling to four scales of the token grid (lines 80-93): ×4 and ×2 by transposed
   convolutions, ×1, ×½ by a stride-2 3×3 convolution.
2. A 3×3 convolution (no bias) of each scale to ``channels`` (lines 246-247).
3. Fusion (``FeatureFusionBlock``, lines 169-209), from the coarsest scale up: the previous
   output plus a residual conv unit of the next finer scale, a second residual conv unit,
   bilinear ×2 (align_corners) and a 1×1 projection. The first block has no skip input
   (line 251). Residual conv units (``PreActResidualConvUnit``, lines 124-166) are
   ReLU → 3×3 conv (no bias) twice plus the input (no norm: dinov2's depth heads have
   ``norm_cfg=None``).
4. A 3×3 convolution + ReLU (line 252), then ``HeadDepth`` (lines 31-44): 3×3 conv to
   ``channels / 2``, bilinear ×2, 3×3 conv to 32, ReLU, 1×1 conv to the output, which
   ``depth_pred`` (``decode_head.py`` lines 155-184) turns into depth: ``ReLU + min_depth``
   (regression, dinov2's DPT), ``sigmoid · max_depth`` (its ``scale_up`` option) or, here as
   an option, the expectation over ``n_bins`` uniform
   bins as :class:`~eqbench.protocols.depth.head.LinearDepthHead` does (the last convolution then
   has ``n_bins`` outputs; dinov2's ``HeadDepth`` has one, so its DPT cannot classify).

The output is 16× the token grid (×2 per fusion block and in ``HeadDepth``; the ×½ scale rounds
an odd grid up), the input resolution for a patch-16 ViT.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbench.protocols.depth.head import NORM_STRATEGIES, depth_from_logits

READOUTS = ("ignore", "add", "project")


class ResidualConvUnit(nn.Module):
    """ReLU → 3×3 conv → ReLU → 3×3 conv, plus the input (``PreActResidualConvUnit``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class FusionBlock(nn.Module):
    """``out = RCU2(x + RCU1(skip))``, bilinear ×2, 1×1 projection (``FeatureFusionBlock``)."""

    def __init__(self, channels: int, with_skip: bool) -> None:
        super().__init__()
        self.rcu1 = ResidualConvUnit(channels) if with_skip else None
        self.rcu2 = ResidualConvUnit(channels)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None and self.rcu1 is not None:
            if skip.shape[-2:] != x.shape[-2:]:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.rcu1(skip)
        x = self.rcu2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class DPTDepthHead(nn.Module):
    """Reassemble four layers' tokens, fuse them from coarse to fine, predict depth.

    Args:
        embed_dim: token width ``D`` of the encoder.
        min_depth / max_depth: range of the bins (and the floor of regression).
        channels: width of the fusion stages (dinov2: 256).
        readout: what to do with the CLS token: ``ignore``, ``add`` or ``project`` (dinov2).
        classify: depth as the expectation over ``n_bins`` uniform bins, else regression
            (dinov2's DPT).
        n_bins / norm_strategy: as :class:`~eqbench.protocols.depth.head.LinearDepthHead`.
        scale_up: regression as ``sigmoid · max_depth`` (dinov2's ``scale_up`` option) in
            place of ``ReLU + min_depth``, whose units can all start dead.
        layers: number of layers read (4: one per scale).

    The input is :func:`eqbench.protocols.depth.token_maps` of four layers: ``(B, 4·D, h, w)``
    for ``readout="ignore"``, else ``(B, 4·2D, h, w)`` with each layer's patch map followed by
    its CLS token broadcast over the grid.
    """

    SCALES = (4.0, 2.0, 1.0, 0.5)

    def __init__(
        self,
        embed_dim: int,
        min_depth: float,
        max_depth: float,
        channels: int = 256,
        readout: str = "project",
        classify: bool = False,
        n_bins: int = 256,
        norm_strategy: str = "linear",
        scale_up: bool = False,
        layers: int = 4,
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}")
        if norm_strategy not in NORM_STRATEGIES:
            raise ValueError(f"norm_strategy must be one of {NORM_STRATEGIES}")
        if layers != len(self.SCALES):
            raise ValueError(f"the DPT head reads {len(self.SCALES)} layers, not {layers}")
        if embed_dim < 8 or channels < 2:
            raise ValueError("embed_dim must be >= 8 and channels >= 2")
        self.embed_dim, self.readout, self.layers = embed_dim, readout, layers
        self.min_depth, self.max_depth = min_depth, max_depth
        self.classify, self.norm_strategy, self.scale_up = classify, norm_strategy, scale_up
        d = embed_dim
        stage = [d // 2 ** (3 - i) for i in range(layers)]  # depthers.py line 172
        # readout "project": Linear(2D, D) + GELU on each token = a 1×1 convolution of the
        # concatenated (patch, CLS) map (dpt_head.py lines 94-99, 108-112).
        self.readout_projects = nn.ModuleList(
            nn.Conv2d(2 * d, d, 1) for _ in range(layers if readout == "project" else 0)
        )
        self.projects = nn.ModuleList(nn.Conv2d(d, c, 1) for c in stage)
        self.resize = nn.ModuleList(
            [
                nn.ConvTranspose2d(stage[0], stage[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(stage[1], stage[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(stage[3], stage[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.convs = nn.ModuleList(nn.Conv2d(c, channels, 3, padding=1, bias=False) for c in stage)
        self.fusion = nn.ModuleList(FusionBlock(channels, with_skip=i > 0) for i in range(layers))
        self.project = nn.Conv2d(channels, channels, 3, padding=1)
        self.head1 = nn.Conv2d(channels, max(channels // 2, 1), 3, padding=1)
        self.head2 = nn.Conv2d(max(channels // 2, 1), 32, 3, padding=1)
        self.head3 = nn.Conv2d(32, n_bins if classify else 1, 1)
        self.register_buffer("bins", torch.linspace(min_depth, max_depth, n_bins))

    @property
    def in_channels(self) -> int:
        """Channels the input map must have."""
        return self.layers * self.embed_dim * (1 if self.readout == "ignore" else 2)

    @staticmethod
    def output_size(grid: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the depth map for a token grid ``(h, w)``."""
        return 32 * math.ceil(grid[0] / 2), 32 * math.ceil(grid[1] / 2)

    def reassemble(self, feats: Tensor) -> list[Tensor]:
        """The four scales ``[(B, D/8, 4h, 4w), (B, D/4, 2h, 2w), (B, D/2, h, w),
        (B, D, h/2, w/2)]`` of an input map ``(B, in_channels, h, w)``."""
        if feats.shape[1] != self.in_channels:
            raise ValueError(
                f"the DPT head expects {self.in_channels} input channels "
                f"({self.layers} layers × {self.embed_dim}"
                f"{'' if self.readout == 'ignore' else ' × 2 with the CLS token'}), "
                f"got {feats.shape[1]}"
            )
        per_layer = feats.chunk(self.layers, dim=1)  # each (B, D or 2D, h, w)
        out = []
        for i, x in enumerate(per_layer):
            if self.readout == "project":
                x = F.gelu(self.readout_projects[i](x))  # (B, D, h, w)
            elif self.readout == "add":
                x = x[:, : self.embed_dim] + x[:, self.embed_dim :]
            out.append(self.resize[i](self.projects[i](x)))
        return out

    def forward(self, feats: Tensor) -> Tensor:
        """Depth ``(B, H, W)`` in metres (:meth:`output_size`) from ``(B, C, h, w)``."""
        x = [conv(s) for conv, s in zip(self.convs, self.reassemble(feats), strict=True)]
        out = self.fusion[0](x[-1])  # coarsest first (dpt_head.py lines 265-267)
        for i in range(1, self.layers):
            out = self.fusion[i](out, x[-(i + 1)])
        out = torch.relu(self.project(out))  # (B, C, 8·h', 8·w')
        out = self.head1(out)
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        logit = self.head3(torch.relu(self.head2(out)))  # (B, K, 16·h', 16·w')
        bins: Tensor = self.bins  # type: ignore[assignment]
        return depth_from_logits(
            logit, bins, self.classify, self.norm_strategy, self.min_depth, self.scale_up
        )
