"""Any timm model as an :class:`~eqbench.backbones.base.Encoder`, plus :func:`create_encoder`.

ViTs are built with ``dynamic_img_size=True`` so one model can be evaluated at any image size
(timm interpolates the position embedding on the fly); CNNs return their last feature map as
patch tokens. Weights always start random: eqbench never downloads anything, pretrained weights
come from local files (see :mod:`eqbench.checkpoints`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import timm
import torch
from torch import Tensor

from eqbench.backbones.base import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, Encoder, Features
from eqbench.backbones.options import check_backbone_options
from eqbench.errors import ConfigError
from eqbench.registry import did_you_mean

logger = logging.getLogger(__name__)

#: Curated short names listed by ``eqbench ls backbones`` → timm model names.
CURATED_TIMM_MODELS: dict[str, str] = {
    "vit_tiny_patch16": "vit_tiny_patch16_224",
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_large_patch16": "vit_large_patch16_224",
    "vit_small_patch8": "vit_small_patch8_224",
    "vit_base_patch8": "vit_base_patch8_224",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
}


def _build_timm_model(timm_name: str, img_size: int, kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """``timm.create_model`` with random weights and no classifier head.

    Passes ``img_size`` and ``dynamic_img_size=True`` where the architecture accepts them (ViTs)
    and drops them for those that do not (CNNs). ``kwargs`` must have passed
    :func:`~eqbench.backbones.options.check_backbone_options`, so nothing reaching timm names a
    file or pretrained weights.

    Returns:
        The model and whether it was built with ``dynamic_img_size=True``.

    Raises:
        ConfigError: timm cannot build the model with these options (e.g. ``embed_dim`` not a
            multiple of ``num_heads``), with timm's reason.
    """
    size_kwargs: dict[str, Any] = {"img_size": img_size, "dynamic_img_size": True}
    while True:
        try:
            model = timm.create_model(
                timm_name, pretrained=False, num_classes=0, **size_kwargs, **kwargs
            )
            return model, bool(size_kwargs.get("dynamic_img_size", False))
        except TypeError as err:
            message = str(err)
            if "dynamic_img_size" in size_kwargs and "'dynamic_img_size'" in message:
                del size_kwargs["dynamic_img_size"]
            elif "img_size" in size_kwargs and "'img_size'" in message:
                size_kwargs = {}
            else:
                raise _build_error(timm_name, kwargs, err) from None
        except (ValueError, RuntimeError, AssertionError, ZeroDivisionError) as err:
            raise _build_error(timm_name, kwargs, err) from None


def _build_error(timm_name: str, kwargs: dict[str, Any], err: BaseException) -> ConfigError:
    detail = " ".join(str(err).split())[:200] or type(err).__name__
    return ConfigError(
        f"timm cannot build '{timm_name}' with options {sorted(kwargs)} ({detail}). Fix the "
        "backbone options (their values must fit together, e.g. embed_dim a multiple of "
        "num_heads)."
    )


class TimmEncoder(Encoder):
    """A timm model (random init) behind the eqbench feature API.

    Args:
        timm_name: a timm model name, optionally with a pretrained tag
            (``"vit_small_patch16_224.dino"``; the tag only selects the preprocessing config).
        img_size: input size the model is built for (ViTs still accept any size).
        arch: name recorded in :meth:`describe` (defaults to ``timm_name``); a registered
            backbone name so that :func:`create_encoder` rebuilds the same architecture.
        mean: input normalisation mean; defaults to the model's ``pretrained_cfg``.
        std: input normalisation std; defaults to the model's ``pretrained_cfg``.
        **kwargs: passed to ``timm.create_model`` (``depth=``, ``drop_path_rate=``, ...).

    Attributes:
        model: the timm module; its ``forward_features`` produces the tokens.
        num_prefix_tokens: CLS + register tokens in front of the patch tokens (ViTs).
        is_token_model: ``True`` for ViT-style models, ``False`` for CNNs.
    """

    model: Any  # a timm nn.Module; typed loosely since timm models vary in attributes

    def __init__(
        self,
        timm_name: str,
        img_size: int = 224,
        *,
        arch: str | None = None,
        mean: tuple[float, ...] | list[float] | None = None,
        std: tuple[float, ...] | list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        options = {"img_size": img_size, **kwargs}
        options.update({k: v for k, v in (("mean", mean), ("std", std)) if v is not None})
        check_backbone_options(options, f"Backbone '{arch or timm_name}'")
        model, dynamic = _build_timm_model(timm_name, img_size, kwargs)
        cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
        norm_mean = tuple(mean) if mean is not None else tuple(cfg.get("mean", IMAGENET_MEAN))
        norm_std = tuple(std) if std is not None else tuple(cfg.get("std", IMAGENET_STD))
        super().__init__(mean=norm_mean, std=norm_std)
        self.model = model
        self.timm_name = timm_name
        self.arch = arch or timm_name
        self.img_size = img_size
        self.dynamic_img_size = dynamic
        self._kwargs = dict(kwargs)
        self._norm_override: dict[str, list[float]] = {}
        if mean is not None:
            self._norm_override["mean"] = [float(v) for v in mean]
        if std is not None:
            self._norm_override["std"] = [float(v) for v in std]

        patch_embed: Any = getattr(model, "patch_embed", None)
        self.is_token_model = patch_embed is not None
        if self.is_token_model:
            self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
            self.has_cls = getattr(model, "cls_token", None) is not None
            self.embed_dim = int(getattr(model, "embed_dim", model.num_features))
            self.patch_size = int(_first(patch_embed.patch_size))
        else:
            self.num_prefix_tokens = 0
            self.has_cls = False
            self.embed_dim = int(model.num_features)
            info = getattr(model, "feature_info", None)
            self.patch_size = int(info[-1]["reduction"]) if info else 32
        logger.debug(
            "built %s (timm %s): D=%d, patch %d, cls=%s, prefix tokens=%d",
            self.arch,
            timm_name,
            self.embed_dim,
            self.patch_size,
            self.has_cls,
            self.num_prefix_tokens,
        )

    def _token_grid(self, height: int, width: int, num_tokens: int) -> tuple[int, int]:
        """Patch grid ``(h, w)`` for an input of ``height × width`` pixels with ``num_tokens``."""
        patch_embed: Any = self.model.patch_embed
        grid: tuple[int, int]
        if self.dynamic_img_size and hasattr(patch_embed, "dynamic_feat_size"):
            h, w = patch_embed.dynamic_feat_size((height, width))
            grid = (int(h), int(w))
        else:
            h, w = patch_embed.grid_size
            grid = (int(h), int(w))
        if grid[0] * grid[1] != num_tokens:
            side = round(num_tokens**0.5)
            if side * side != num_tokens:
                raise RuntimeError(
                    f"{self.arch}: cannot lay {num_tokens} patch tokens out on a grid "
                    f"(input {height}x{width}, patch {self.patch_size})"
                )
            grid = (side, side)
        return grid

    def forward_tokens(self, x: Tensor) -> Features:
        """Features of normalised images.

        Args:
            x: ``(B, 3, H, W)`` normalised images.

        Returns:
            ViTs: ``cls`` ``(B, D)`` (``None`` without a CLS token), ``patch`` ``(B, h·w, D)``
            with the prefix (CLS and register) tokens removed. CNNs: ``cls=None`` and the last
            feature map ``(B, C, h, w)`` as ``patch`` ``(B, h·w, C)``.
        """
        out: Tensor = self.model.forward_features(x)
        return self._features(out, x.shape[-2], x.shape[-1])

    def _features(self, out: Tensor, height: int, width: int) -> Features:
        """:class:`Features` of ``forward_features``' output for an ``height × width`` input."""
        if out.ndim == 4:
            _, _, h, w = out.shape
            return Features(cls=None, patch=out.flatten(2).transpose(1, 2), grid=(h, w))
        if out.ndim != 3:
            raise RuntimeError(
                f"{self.arch}: forward_features returned shape {tuple(out.shape)}; expected "
                "(B, N, D) tokens or a (B, C, h, w) feature map"
            )
        patch = out[:, self.num_prefix_tokens :]
        cls = out[:, 0] if self.has_cls else None
        grid = self._token_grid(height, width, patch.shape[1])
        return Features(cls=cls, patch=patch, grid=grid)

    def forward_masked(self, images: Tensor, mask: Tensor, mask_token: Tensor) -> Features:
        """Features with masked patch embeddings replaced by ``mask_token`` (iBOT).

        The steps of timm's ``VisionTransformer.forward_features`` with the replacement between
        ``patch_embed`` and ``_pos_embed``, as iBOT's ``VisionTransformer.mask_model``.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            mask: ``(B, N)`` bool, ``True`` where the token is masked.
            mask_token: ``(D,)``.
        """
        model = self.model
        if not self.is_token_model or not all(
            hasattr(model, name) for name in ("_pos_embed", "patch_drop", "norm_pre", "blocks")
        ):
            return super().forward_masked(images, mask, mask_token)
        x = self.normalize(images)
        tokens: Tensor = model.patch_embed(x)  # (B, h, w, D) (dynamic size) or (B, N, D)
        if mask.shape != (tokens.shape[0], tokens[0, ..., 0].numel()):
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match the {tokens.shape[1:-1]} tokens"
            )
        where = mask.view(*tokens.shape[:-1], 1)
        tokens = torch.where(where, mask_token.to(tokens.dtype), tokens)
        out = model.norm(model.blocks(model.norm_pre(model.patch_drop(model._pos_embed(tokens)))))
        return self._features(out, x.shape[-2], x.shape[-1])

    def forward_visible(self, images: Tensor, keep: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Encode the kept patch tokens only (MAE): timm's ``forward_features`` steps with the
        dropped tokens removed after the position embedding, as MAE's ``random_masking``.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            keep: ``(B, n_keep)`` long indices of the kept patch tokens.

        Returns:
            ``(B, prefix + n_keep, D)`` tokens after the final norm, and the grid ``(h, w)``.
        """
        model = self.model
        if not self.is_token_model or not all(
            hasattr(model, name) for name in ("_pos_embed", "norm_pre", "blocks", "norm")
        ):
            return super().forward_visible(images, keep)
        x = self.normalize(images)
        tokens: Tensor = model._pos_embed(model.patch_embed(x))  # (B, prefix + N, D)
        prefix = self.num_prefix_tokens
        patch = tokens[:, prefix:]
        grid = self._token_grid(x.shape[-2], x.shape[-1], patch.shape[1])
        index = keep.to(patch.device).unsqueeze(-1).expand(-1, -1, patch.shape[-1])
        visible = torch.gather(patch, 1, index)  # (B, n_keep, D)
        out = torch.cat([tokens[:, :prefix], visible], dim=1)
        return model.norm(model.blocks(model.norm_pre(out))), grid

    def forward_layers(self, images: Tensor, n: int, last: bool = False) -> list[Features]:
        """Features of ``n`` blocks after the final norm, through timm's
        ``forward_intermediates``: evenly spaced (block ``(k + 1) · depth / n`` for k < n, as
        dinov2's ``out_index`` [2, 5, 8, 11] of a 12-block ViT) or, with ``last``, the ``n``
        last ones (facebookresearch/dinov2 ``dinov2/models/vision_transformer.py`` L277:
        ``blocks_to_take = range(total_block_len - n, total_block_len)``)."""
        model = self.model
        if n == 1 or self.block_count() == 1:
            return super().forward_layers(images, n, last)
        depth = self.block_count()
        if not 1 <= n <= depth:
            raise ConfigError(f"Backbone '{self.arch}' has {depth} blocks; cannot read {n}.")
        if last:
            indices = list(range(depth - n, depth))
        else:
            indices = [(k + 1) * depth // n - 1 for k in range(n)]
        x = self.normalize(images)
        outs = model.forward_intermediates(
            x, indices=indices, return_prefix_tokens=True, norm=True, intermediates_only=True
        )
        feats = []
        for spatial, prefix in outs:  # (B, D, h, w), (B, prefix, D)
            patch = spatial.flatten(2).transpose(1, 2)  # (B, h·w, D)
            cls = prefix[:, 0] if self.has_cls else None
            feats.append(Features(cls=cls, patch=patch, grid=tuple(spatial.shape[-2:])))
        return feats

    def block_count(self) -> int:
        """The transformer blocks :meth:`forward_layers` can read (1 for CNNs)."""
        model = self.model
        blocks = getattr(model, "blocks", None)
        if not self.is_token_model or not hasattr(model, "forward_intermediates"):
            return 1
        return len(blocks) if blocks is not None else 1

    def describe(self) -> dict[str, Any]:
        """``{"name", "kwargs", "timm_name"}``; ``create_encoder(name, **kwargs)`` rebuilds it."""
        kwargs: dict[str, Any] = {"img_size": self.img_size, **self._kwargs, **self._norm_override}
        return {"name": self.arch, "kwargs": kwargs, "timm_name": self.timm_name}


def _first(value: Any) -> Any:
    """First element of a tuple/list, or the value itself."""
    return value[0] if isinstance(value, tuple | list) else value


def _timm_factory(arch: str, timm_name: str) -> Callable[..., Encoder]:
    def factory(img_size: int = 224, **kwargs: Any) -> Encoder:
        return TimmEncoder(timm_name, img_size=img_size, arch=arch, **kwargs)

    factory.__name__ = arch
    factory.__doc__ = f"timm ``{timm_name}`` (random init; weights from local files)."
    return factory


for _arch, _timm_name in CURATED_TIMM_MODELS.items():
    if timm.is_model(_timm_name):  # register what this timm version has
        BACKBONES.register(_arch)(_timm_factory(_arch, _timm_name))


def create_encoder(name: str, img_size: int = 224, **kwargs: Any) -> Encoder:
    """Build a backbone with random weights.

    Args:
        name: a registered backbone (``eqbench ls backbones``) or any timm model name
            (optionally with a pretrained tag, e.g. ``vit_small_patch16_224.dino``).
        img_size: input size the model is built for.
        **kwargs: architecture options (passed on to the factory / ``timm.create_model``).

    Raises:
        ConfigError: unknown name, with a did-you-mean over registered and timm names.
    """
    if name in BACKBONES:
        return BACKBONES.get(name)(img_size=img_size, **kwargs)
    if timm.is_model(name):
        return TimmEncoder(name, img_size=img_size, **kwargs)
    hint = did_you_mean(name, BACKBONES.names() + list(timm.list_models()))
    raise ConfigError(
        f"Unknown backbone '{name}'.{hint} Run `eqbench ls backbones` for the curated ones; "
        "any timm model name (timm.list_models()) also works."
    )
