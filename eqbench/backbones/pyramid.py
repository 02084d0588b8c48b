"""ViTDet's simple feature pyramid: maps at several strides from one token map.

Li, Mao, Girshick, He 2022, "Exploring Plain Vision Transformer Backbones for Object Detection"
(arXiv 2203.16527, Fig. 2c), as detectron2's ``modeling/backbone/vit.py`` builds it with
``norm="LN"``: from the stride-16 token map of width ``D``, stride 4 = deconv 2× to ``D/2``,
LayerNorm, GELU, deconv 2× to ``D/4``; stride 8 = deconv 2× to ``D/2``; stride 16 = identity;
stride 32 = 2× max-pool. Each level then gets a 1×1 and a 3×3 convolution (no bias), each followed
by LayerNorm, to ``out_channels``.

Both Mask R-CNN tasks use it (torchvision's in :mod:`eqbench.protocols.detection.maskrcnn`, mmdet's
and mmseg's through :class:`eqbench.openmmlab.backbone.EqbenchBackbone`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from eqbench.errors import ConfigError

#: Output strides of the pyramid (ViTDet, GTSA, mmdet's FPN inputs).
DEFAULT_STRIDES = (4, 8, 16, 32)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (ViTDet's norm)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _rescale(dim: int, ratio: float) -> tuple[nn.Module, int]:
    """The resampling stage for ``ratio`` (a power of two) and the width it outputs.

    Upsampling by ``2**k``: ``k`` 2×2 transposed convolutions, each halving the width, with
    LayerNorm and GELU between them (ViTDet's stride-4 and stride-8 stages for ``k`` = 2, 1).
    Downsampling: a max-pool; ratio 1: identity.
    """
    if ratio == 1:
        return nn.Identity(), dim
    if ratio < 1:
        k = round(1 / ratio)
        return nn.MaxPool2d(kernel_size=k, stride=k), dim
    layers: list[nn.Module] = []
    width = dim
    for i in range(round(math.log2(ratio))):
        if i > 0:
            layers += [LayerNorm2d(width), nn.GELU()]
        out = max(dim // 2 ** (i + 1), 1)
        layers.append(nn.ConvTranspose2d(width, out, kernel_size=2, stride=2))
        width = out
    return (layers[0] if len(layers) == 1 else nn.Sequential(*layers)), width


def _output(width: int, out_channels: int) -> nn.Sequential:
    """ViTDet's per-level head: 1×1 conv, LN, 3×3 conv, LN (convolutions without bias)."""
    return nn.Sequential(
        nn.Conv2d(width, out_channels, 1, bias=False),
        LayerNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid over a ``(B, D, h, w)`` token map.

    Args:
        dim: channels ``D`` of the token map.
        out_channels: channels of every output level (ViTDet: 256; ``None``: ``dim``).
        in_stride: stride of the token map in pixels (16 for ViTDet; 32 for a ResNet's last map).
        out_strides: strides of the outputs; each ``in_stride / s`` must be a power of two.

    Attributes:
        scales: the resampling stage of each level; outputs: its 1×1 + 3×3 conv head.
        out_strides / out_channels: of the returned maps.
    """

    def __init__(
        self,
        dim: int,
        out_channels: int | None = 256,
        in_stride: int = 16,
        out_strides: Sequence[int] = DEFAULT_STRIDES,
    ) -> None:
        super().__init__()
        self.out_channels = dim if out_channels is None else out_channels
        stages = []
        for s in out_strides:
            ratio = in_stride / s
            if ratio <= 0 or not math.log2(ratio).is_integer():
                raise ConfigError(
                    f"Cannot make stride {s} from a stride-{in_stride} token map (the ratio must "
                    "be a power of two). Use out_strides like (4, 8, 16, 32)."
                )
            stages.append(_rescale(dim, ratio))
        # all resampling stages before the conv heads: the order their weights are drawn in
        self.scales = nn.ModuleList(stage for stage, _ in stages)
        self.outputs = nn.ModuleList(_output(width, self.out_channels) for _, width in stages)
        self.out_strides = tuple(out_strides)

    def forward(self, fmap: Tensor) -> tuple[Tensor, ...]:
        """``(B, D, h, w)`` → one ``(B, out_channels, h·r, w·r)`` map per output stride."""
        return tuple(out(scale(fmap)) for scale, out in zip(self.scales, self.outputs, strict=True))
