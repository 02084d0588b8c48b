"""eqbench: equivariance and invariance benchmarks for self-supervised visual representations."""

from __future__ import annotations

import os

# Never reach for the Hugging Face hub: eqbench works offline, weights come from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
