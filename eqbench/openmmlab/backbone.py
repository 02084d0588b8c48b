"""Any eqbench backbone as an mmsegmentation and mmdetection backbone.

:class:`EqbenchBackbone` loads a model spec (checkpoint path, ``timm:...``, ``baseline:...``,
``zoo:...``; see :func:`eqbench.models.load_model`) and turns its patch tokens into a
multi-scale feature pyramid with ViTDet's simple feature pyramid
(:class:`~eqbench.backbones.pyramid.SimpleFeaturePyramid`, the one the torchvision Mask R-CNN task
uses too): from the stride-16 token map, two 2×2 transposed convolutions give stride 4, one gives
stride 8, the map itself is stride 16 and a 2×2 max-pool gives stride 32; each level then gets a
1×1 and a 3×3 convolution with LayerNorm.

Inputs are images in [0, 1] (the engines' data preprocessors only divide by 255): the encoder
applies its own normalisation, so every backbone sees the inputs it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from eqbench.backbones.pyramid import DEFAULT_STRIDES, SimpleFeaturePyramid
from eqbench.models import load_model
from eqbench.openmmlab import require_openmmlab

require_openmmlab()  # a MissingDependencyError naming scripts/build_mmcv.sh, not an ImportError
from mmengine.model import BaseModule  # noqa: E402


class EqbenchBackbone(BaseModule):
    """An eqbench encoder plus :class:`SimpleFeaturePyramid`, for mmseg and mmdet configs.

    Registered as ``EqbenchBackbone`` in both engines' ``MODELS`` registries::

        backbone=dict(type="EqbenchBackbone", checkpoint="path/to/ckpt.pt", img_size=512)

    Args:
        checkpoint: an eqbench model spec.
        img_size: the size the encoder is built for (ViTs run at any size).
        out_strides: strides of the returned maps.
        out_channels: channels of each returned map (``None``: the encoder's ``embed_dim``).
        frozen: keep the encoder's weights fixed (and in eval mode); the pyramid still trains.
        init_cfg: mmengine init config of the pyramid (default: PyTorch's initialisation).

    Attributes:
        out_channels: channels of each returned map.
        model_id / sha256: of the loaded checkpoint (for provenance).
    """

    def __init__(
        self,
        checkpoint: str,
        img_size: int = 224,
        out_strides: Sequence[int] = DEFAULT_STRIDES,
        out_channels: int | None = None,
        frozen: bool = False,
        init_cfg: Any = None,
    ) -> None:
        super().__init__(init_cfg)
        loaded = load_model(checkpoint, img_size=img_size)
        self.encoder = loaded.encoder
        self.model_id, self.sha256 = loaded.model_id, loaded.sha256
        dim, stride = self.encoder.embed_dim, self.encoder.patch_size
        self.pyramid = SimpleFeaturePyramid(dim, out_channels, stride, out_strides)
        self.out_channels = [self.pyramid.out_channels] * len(self.pyramid.out_strides)
        self.frozen = frozen
        if frozen:
            self.encoder.requires_grad_(False)
        self.encoder.train(not frozen)

    def init_weights(self) -> None:
        """Leave the loaded encoder alone: mmengine would otherwise call the ``init_weights``
        of its children (timm's ViT has one) and overwrite the checkpoint's weights."""
        if self.init_cfg:
            from mmengine.model import initialize

            initialize(self.pyramid, self.init_cfg)
        self._is_init = True

    def train(self, mode: bool = True) -> EqbenchBackbone:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Images ``(B, 3, H, W)`` in [0, 1] → maps ``(B, D, H / s, W / s)`` per stride ``s``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats = self.encoder(images)
        return self.pyramid(feats.patch_map())  # (B, D, h, w) -> maps


def register_backbone() -> None:
    """Register :class:`EqbenchBackbone` in mmseg's and mmdet's ``MODELS`` (idempotent)."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS

    for registry in (MMSEG_MODELS, MMDET_MODELS):
        registry.register_module(name="EqbenchBackbone", module=EqbenchBackbone, force=True)
