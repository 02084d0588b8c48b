"""eqbench.allocator: keeping freed memory stops a CPU forward pass from page-faulting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc's",
)

# A fresh interpreter per case: the setting is process-wide and cannot be undone.
_PROBE = """
import resource, sys, timm, torch
from eqbench.allocator import keep_freed_memory
kept = keep_freed_memory()
assert keep_freed_memory() == kept  # a second call changes nothing
torch.set_num_threads(1)
model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=0).eval()
x = torch.rand(64, 3, 64, 64)
with torch.inference_mode():
    model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        model(x)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(kept, faults)
"""


_SWITCH_ONLY = "from eqbench.allocator import keep_freed_memory; print(keep_freed_memory(), 0)"


def _probe(code: str = _PROBE, **env: str) -> tuple[bool, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("EQBENCH_KEEP_FREED_MEMORY", None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_kept_memory_removes_the_page_faults_of_a_forward_pass() -> None:
    kept, faults = _probe()
    default, default_faults = _probe(EQBENCH_KEEP_FREED_MEMORY="0")
    assert kept and not default
    # glibc's defaults re-fault each layer's activations (~8,000 faults per pass here)
    assert default_faults > 3000
    assert faults < default_faults / 5


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4096"},
        {"EQBENCH_KEEP_FREED_MEMORY": "0"},
    ],
)
def test_a_user_set_allocator_is_left_alone(env: dict[str, str]) -> None:
    assert _probe(_SWITCH_ONLY)[0]  # applied by default
    assert not _probe(_SWITCH_ONLY, **env)[0]
