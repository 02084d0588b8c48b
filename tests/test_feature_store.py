"""The feature store's batching: every image is encoded once, in order, whatever the schedule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

from eqbench.backbones import create_encoder
from eqbench.data import load_dataset
from eqbench.features.store import FeatureStore


def _images(n: int, size: int = 32) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_encoder("micro_vit", img_size=32).eval()


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
def test_batches_cover_every_image_once_in_order(prefetch: bool, batch_size: int) -> None:
    """7 images in batches of 1, 3 (3+3+1), 7 and 16: features equal one full-batch forward."""
    images = _images(7)
    calls: list[list[int]] = []

    def make(indices: Sequence[int]) -> Tensor:
        calls.append(list(indices))
        return images[list(indices)]

    encoder = _encoder()
    store = FeatureStore(
        encoder, "x", torch.device("cpu"), None, batch_size, show_progress=False, prefetch=prefetch
    )
    dataset = load_dataset("photos", "test", n=7, seed=0)
    feats = store.get(dataset, {"k": 1}, make)
    assert [i for c in calls for i in c] == list(range(7))
    assert all(len(c) <= batch_size for c in calls)
    with torch.inference_mode():
        ref = encoder(images)
    assert torch.allclose(feats["cls"], ref.pooled("cls"), atol=1e-5)
    assert torch.allclose(feats["avgpool"], ref.pooled("avgpool"), atol=1e-5)
    maps = store.patch_maps(dataset, {"k": 1}, make, n=5)
    h, w = ref.grid
    ref_maps = ref.patch[:5].transpose(1, 2).reshape(5, -1, h, w)
    assert maps.shape == ref_maps.shape
    assert torch.allclose(maps, ref_maps, atol=1e-5)


def test_prefetch_gives_bit_identical_features() -> None:
    images = _images(10)

    def make(indices: Sequence[int]) -> Tensor:
        return images[list(indices)]

    dataset = load_dataset("photos", "test", n=10, seed=0)
    out = []
    for prefetch in (False, True):
        store = FeatureStore(
            _encoder(), "x", torch.device("cpu"), None, 4, show_progress=False, prefetch=prefetch
        )
        out.append(store.get(dataset, {"k": 1}, make))
    assert torch.equal(out[0]["cls"], out[1]["cls"])
    assert torch.equal(out[0]["avgpool"], out[1]["avgpool"])


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_failing_batch_raises_and_caches_nothing(tmp_path: Path, prefetch: bool) -> None:
    """An error while making a batch (here the third, possibly in the background thread) reaches
    the caller, and no cache entry is written."""
    images = _images(10)

    def make(indices: Sequence[int]) -> Tensor:
        if 8 in indices:
            raise ValueError("corrupt image 8")
        return images[list(indices)]

    dataset = load_dataset("photos", "test", n=10, seed=0)
    store = FeatureStore(
        _encoder(), "x", torch.device("cpu"), tmp_path, 4, show_progress=False, prefetch=prefetch
    )
    with pytest.raises(ValueError, match="corrupt image 8"):
        store.get(dataset, {"k": 1}, make)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_concurrent_writers_of_one_entry_leave_one_whole_entry(tmp_path: Path) -> None:
    """Two stores (two runs, or two ranks) encoding the same image set into one cache folder at
    once leave a single readable entry and no temporary files."""
    from concurrent.futures import ThreadPoolExecutor

    from safetensors.torch import load_file

    images = _images(12)

    def make(indices: Sequence[int]) -> Tensor:
        return images[list(indices)]

    dataset = load_dataset("photos", "test", n=12, seed=0)
    stores = [
        FeatureStore(_encoder(), "x", torch.device("cpu"), tmp_path, 4, show_progress=False)
        for _ in range(2)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outs = list(pool.map(lambda s: s.get(dataset, {"k": 1}, make), stores))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.suffix for p in files] == [".safetensors"]
    assert files[0].stem == stores[0].key(dataset, {"k": 1})
    cached = load_file(str(files[0]))
    for out in outs:
        assert all(torch.equal(cached[k], out[k]) for k in cached)
