"""Shared test set-up: offline, a private feature cache, few threads."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# test helpers (fixtures.py, test_results.record) import by their module names; put this folder
# first so an installed package named "tests" (mmsegmentation ships one) cannot shadow them
sys.path.insert(0, str(Path(__file__).resolve().parent))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one BLAS/OpenMP thread per test worker: busy-waiting BLAS threads of several workers on
    # few cores slow each other down by orders of magnitude (set before numpy/torch load)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own feature cache, so no test sees another's cached features."""
    cache = tmp_path_factory.mktemp("feature-cache")
    monkeypatch.setenv("EQBENCH_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread during the test (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    micro models gain nothing from threads, and threads slow them badly on a busy machine."""
    import torch  # here, not at the top: the thread variables above are set before torch loads

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def zoo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> Path:
    """An empty model zoo for the test (``EQBENCH_ZOO_DIR``), with one torch thread."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    monkeypatch.setenv("EQBENCH_ZOO_DIR", str(zoo))
    return zoo
