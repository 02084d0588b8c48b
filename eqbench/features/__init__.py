"""Feature extraction with an on-disk cache: one encoding pass per (checkpoint, data, transform)."""

from __future__ import annotations

from eqbench.features.store import FeatureStore, default_cache_dir

__all__ = ["FeatureStore", "default_cache_dir"]
