"""``mae``: masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022, arXiv 2111.06377; code ``facebookresearch/mae``, ``models_mae.py``).

One view per image (MAE's augmentations: random resized crop, scale 0.2–1, horizontal flip; no
colour). A random 75% of its patch tokens are removed after the position embedding (per-image
uniform noise, ``argsort``, keep ``int(N·(1 − ratio))``); the ViT encodes the visible ones only
(:meth:`~eqbench.backbones.Encoder.forward_visible`). A light decoder embeds them to its width,
puts a shared learnable mask token at every removed position, adds fixed 2-D sin-cos position
embeddings, runs transformer blocks and predicts each patch's ``p·p·3`` pixels. Loss: MSE on the
masked patches only, with per-patch normalised targets (``norm_pix_loss``), the targets being the
encoder-normalised view.

**eqbench defaults** (the paper's decoder is 512 wide, 8 blocks, 16 heads): decoder width 128,
2 blocks, 4 heads, so that CPU runs stay fast — set the paper's values on a GPU. The prefix (CLS)
tokens pass through the decoder with a zero position embedding (MAE's CLS entry is zeros too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError
from eqbench.losses import masked_patch_mse, patchify
from eqbench.methods.augment import TwoViewAugment, build_augment_config, to_unit_float
from eqbench.methods.base import Method, TrainBatch, register_method

#: MAE's augmentations: crop (scale 0.2–1) and flip only.
MAE_AUGMENT: dict[str, Any] = {
    "crop_scale": [0.2, 1.0],
    "jitter_p": 0.0,
    "grayscale_p": 0.0,
    "blur_p": [0.0, 0.0],
    "solarize_p": [0.0, 0.0],
}


@dataclass
class MAEOptions:
    """Options of MAE.

    Attributes:
        mask_ratio: fraction of patch tokens removed (paper 0.75).
        decoder_dim: decoder width (paper 512).
        decoder_depth: decoder blocks (paper 8).
        decoder_heads: decoder attention heads (paper 16).
        norm_pix_loss: per-patch normalised targets (paper: yes for its best results).
        augment: overrides of MAE's augmentations (:data:`MAE_AUGMENT`).
    """

    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"MAE mask_ratio must lie in (0, 1), got {self.mask_ratio}.")
        if min(self.decoder_dim, self.decoder_depth, self.decoder_heads) < 1:
            raise ConfigError("MAE decoder_dim, decoder_depth and decoder_heads must be >= 1.")
        if self.decoder_dim % self.decoder_heads or self.decoder_dim % 4:
            raise ConfigError(
                "MAE decoder_dim must be a multiple of decoder_heads and of 4 (sin-cos embedding)."
            )


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2-D sin-cos position embeddings ``(h·w, dim)``, row-major: the first half encodes
    the row, the second the column, each as ``[sin(pos·ω), cos(pos·ω)]`` with
    ``ω_k = 10000^(−k/(dim/4))`` (MAE's ``get_2d_sincos_pos_embed``)."""
    h, w = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for pos in (rows.flatten(), cols.flatten()):
        angles = pos[:, None] * omega[None]  # (h·w, dim/4)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


def random_keep(
    n_images: int, n_tokens: int, ratio: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """MAE's per-image random masking.

    Returns:
        ``(keep, mask)``: ``(B, n_keep)`` long indices of the kept tokens,
        ``n_keep = int(N·(1 − ratio))`` (at least 1), and ``(B, N)`` bool, ``True`` where removed.
    """
    n_keep = max(1, int(n_tokens * (1 - ratio)))
    noise = torch.rand(n_images, n_tokens, generator=generator)
    keep = noise.argsort(dim=1)[:, :n_keep]
    mask = torch.ones(n_images, n_tokens, dtype=torch.bool)
    mask.scatter_(1, keep, False)
    return keep, mask


class MAEDecoder(nn.Module):
    """MAE's light decoder.

    Args:
        in_dim: encoder width ``D``.
        patch_pixels: ``p·p·3``.
        dim: decoder width.
        depth: transformer blocks.
        heads: attention heads.
    """

    def __init__(self, in_dim: int, patch_pixels: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.Sequential(
            *(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_pixels)

    def forward(self, tokens: Tensor, keep: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor:
        """Encoder tokens ``(B, prefix + n_keep, D)`` → predicted patches ``(B, h·w, p·p·3)``."""
        x = self.embed(tokens)  # (B, prefix + n_keep, d)
        batch, n_tokens = x.shape[0], grid[0] * grid[1]
        full = self.mask_token.to(x.dtype).expand(batch, n_tokens, self.dim)
        index = keep.to(x.device).unsqueeze(-1).expand(-1, -1, self.dim)
        full = full.scatter(1, index, x[:, prefix:])  # (B, N, d): visible back in place
        full = full + sincos_pos_embed(self.dim, grid).to(x.device, x.dtype)
        x = self.norm(self.blocks(torch.cat([x[:, :prefix], full], dim=1)))
        return self.pred(x[:, prefix:])  # (B, N, p·p·3)


class MAE(Method):
    """MAE (arXiv 2111.06377) on a ViT backbone."""

    def __init__(self, encoder: Encoder, img_size: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.name = "mae"
        opts = from_dict(MAEOptions, options, "method 'mae' options")
        self.opts = opts
        self.encoder = encoder
        self.augment = TwoViewAugment(build_augment_config(opts.augment, MAE_AUGMENT), img_size)
        patch = encoder.patch_size
        self.decoder = MAEDecoder(
            encoder.embed_dim,
            patch * patch * 3,
            opts.decoder_dim,
            opts.decoder_depth,
            opts.decoder_heads,
        )
        self.num_prefix_tokens = int(getattr(encoder, "num_prefix_tokens", 0))
        self.options = {**to_dict(opts), "augment": self.augment.describe()}

    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """Mask, encode the visible patches, decode, MSE on the masked patches.

        Draws, in order from ``batch.generator``: one view, then the masking noise.
        """
        view = self.augment.view(to_unit_float(batch.images), 0, batch.generator)  # (B, 3, S, S)
        p = self.encoder.patch_size
        n_tokens = (view.shape[-2] // p) * (view.shape[-1] // p)
        keep, mask = random_keep(view.shape[0], n_tokens, self.opts.mask_ratio, batch.generator)
        tokens, grid = self.encoder.forward_visible(view, keep.to(view.device))
        prediction = self.decoder(tokens, keep, self.num_prefix_tokens, grid)
        target = patchify(self.encoder.normalize(view), p)
        with torch.autocast(view.device.type, enabled=False):
            loss = masked_patch_mse(
                prediction.float(), target.float(), mask.to(view.device), self.opts.norm_pix_loss
            )
        return {"loss": loss, "recon": loss}


@register_method(
    "mae",
    paper="MAE: He et al., CVPR 2022, arXiv 2111.06377",
    test_options={"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
)
def mae(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
    """MAE (arXiv 2111.06377): 75% masking, light decoder, normalised-pixel loss."""
    return MAE(encoder, img_size, options)
