"""Invariance score: how close f(gI) stays to f(I), relative to unrelated images.

The raw mean cosine similarity between the features of an image and of its transformed version
is not comparable across encoders, because encoders differ in how similar the features of
*unrelated* images are (anisotropy, a large shared component). The score therefore normalises the
pair similarity by the similarity of unrelated pairs, made by matching each image with another one
through a seeded derangement π (a permutation without fixed points):

    invariance = (cos_pair − cos_unrelated) / (1 − cos_unrelated)
               = 1 − (1 − cos_pair) / (1 − cos_unrelated),

i.e. one minus the cosine *distance* of transformed pairs in units of the cosine distance of
unrelated images: 1 means f(gI) = f(I) up to scale (invariant), 0 means a transformed image is as
far from its original as an unrelated image is, and negative values mean farther still.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

DEGENERATE_TOL = 1e-8
"""``1 − cos_unrelated`` below this is treated as zero (all original features parallel)."""


def derangement(n: int, seed: int) -> NDArray[np.intp]:
    """A seeded random permutation of ``0..n-1`` without fixed points, ``(n,)``.

    Built as one random cycle (``π(p_i) = p_{i+1 mod n}`` for a random order ``p``), so no element
    maps to itself; needs ``n >= 2``.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    pi = np.empty(n, dtype=np.intp)
    pi[order] = np.roll(order, -1)
    return pi


def _unit_rows(x: NDArray[np.float64]) -> NDArray[np.float64]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: NDArray[np.float64] = x / np.maximum(norms, 1e-12)  # zero rows stay zero (cosine 0)
    return out


def invariance_score(
    f_orig: npt.ArrayLike, f_trans: npt.ArrayLike, *, seed: int = 0
) -> dict[str, float]:
    """Normalised invariance of features to a transformation (see module docstring).

    Args:
        f_orig: features of the original images ``(n, d)``, ``n >= 2``.
        f_trans: features of the transformed images ``(n, d)``, row ``i`` from image ``i``.
        seed: seed of the derangement pairing unrelated images.

    Returns:
        ``cos_pair`` (mean cosine of f(I_i) and f(gI_i)), ``cos_unrelated`` (mean cosine of
        f(I_i) and f(I_π(i))) and ``invariance``. Degenerate cases: if every row of both arrays
        is the same vector (a constant encoder, zero vectors included although they have no
        cosine) ``invariance`` is 1.0. If all original features are parallel
        (``1 − cos_unrelated < 1e-8``) the ratio is 0/0 or x/0: when the transformed features are
        parallel to them too (``cos_pair ≥ 1 − 1e-8``) the encoder cannot tell ``gI`` from ``I``
        and ``invariance`` is 1.0; otherwise (transformed features leave a collapsed original
        set) it is undefined and reported as NaN, with a warning.
    """
    a = np.asarray(f_orig, dtype=np.float64)
    b = np.asarray(f_trans, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (n, d) arrays of equal shape, got {a.shape} and {b.shape}")
    ua, ub = _unit_rows(a), _unit_rows(b)
    pi = derangement(a.shape[0], seed)
    cos_pair = float(np.einsum("nd,nd->n", ua, ub).mean())
    cos_unrelated = float(np.einsum("nd,nd->n", ua, ua[pi]).mean())
    denominator = 1.0 - cos_unrelated
    if np.all(a == a[0]) and np.all(b == a[0]):
        invariance = 1.0  # a constant encoder (zero vectors included, whose cosine is undefined)
    elif denominator < DEGENERATE_TOL:
        invariance = 1.0 if cos_pair >= 1.0 - DEGENERATE_TOL else math.nan
        if math.isnan(invariance):
            logger.warning(
                "invariance undefined: original features all parallel (cos_unrelated=%.6f) but "
                "transformed ones differ (cos_pair=%.6f)",
                cos_unrelated,
                cos_pair,
            )
    else:
        invariance = (cos_pair - cos_unrelated) / denominator
    return {"cos_pair": cos_pair, "cos_unrelated": cos_unrelated, "invariance": invariance}
