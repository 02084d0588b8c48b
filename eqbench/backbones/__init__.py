"""Backbones behind one feature API (:class:`Encoder` → :class:`Features`).

Importing this package registers every backbone in :data:`BACKBONES`.
"""

from __future__ import annotations

from eqbench.backbones import micro, pixels  # noqa: F401  (registers backbones)
from eqbench.backbones.base import BACKBONES, Encoder, Features
from eqbench.backbones.pixels import PixelEncoder
from eqbench.backbones.timm_encoder import TimmEncoder, create_encoder

__all__ = ["BACKBONES", "Encoder", "Features", "PixelEncoder", "TimmEncoder", "create_encoder"]
