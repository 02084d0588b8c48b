"""MAE's reconstruction loss (He et al., CVPR 2022, arXiv 2111.06377; code
``facebookresearch/mae``, ``models_mae.py``: ``patchify`` and ``forward_loss``)."""

from __future__ import annotations

from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W)`` → ``(B, h·w, p·p·C)``, row-major patches, pixels ``(p_y, p_x, c)``
    within a patch (MAE's ``nchpwq->nhwpqc``).

    Raises:
        ValueError: the sides are not multiples of ``patch_size``.
    """
    batch, channels, height, width = images.shape
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"image {height}x{width} is not a whole number of {p}-pixel patches")
    h, w = height // p, width // p
    x = images.reshape(batch, channels, h, p, w, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(batch, h * w, p * p * channels)


def masked_patch_mse(
    prediction: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True, eps: float = 1e-6
) -> Tensor:
    """Mean squared error over the masked patches only.

    Args:
        prediction: ``(B, N, P)`` predicted patches.
        target: ``(B, N, P)`` patches (:func:`patchify`).
        mask: ``(B, N)``, 1 (or ``True``) for masked (removed) patches.
        norm_pix: normalise each target patch by its mean and (unbiased) variance, MAE's
            ``norm_pix_loss`` (its default in the paper's best setting).
        eps: added to the variance.

    Returns:
        ``Σ_masked mean_pixels (pred − target)² / #masked`` (scalar).
    """
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    per_patch = (prediction - target).pow(2).mean(dim=-1)  # (B, N)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum()
