"""What the protocol test modules share to run a task in process: a feature store that keeps
nothing on disk and an evaluation context of the raw-pixel encoder on a dataset."""

from __future__ import annotations

import torch

from eqbench.backbones.pixels import PixelEncoder
from eqbench.checkpoints import LoadedModel
from eqbench.data.base import DatasetSpec
from eqbench.features.store import FeatureStore
from eqbench.protocols import EvalContext


def memory_store(encoder: torch.nn.Module, checkpoint_sha256: str = "e" * 64) -> FeatureStore:
    """A feature store of ``encoder`` on the CPU, without a disk cache or a progress bar."""
    return FeatureStore(encoder, checkpoint_sha256, torch.device("cpu"), None, show_progress=False)  # type: ignore[arg-type]


def pixel_context(dataset: str, checkpoint_sha256: str = "e" * 64) -> EvalContext:
    """The context of a task run of the raw-pixel encoder (32 px, 8×8 grid) on ``dataset``
    (a ``--dataset`` spec such as ``nyu:PATH``), seed 0."""
    encoder = PixelEncoder(img_size=32, grid=8)
    model = LoadedModel(model_id="pixels", sha256="p" * 64, encoder=encoder, spec="x", info={})
    store = memory_store(encoder, checkpoint_sha256)
    return EvalContext(model, store, DatasetSpec.parse(dataset), seed=0)
