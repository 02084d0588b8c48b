"""Device selection and mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from eqbench.errors import EqbenchError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a :class:`torch.device`.

    ``auto`` picks CUDA when available, else the CPU. Asking for CUDA on a machine without it is
    an error that says so, rather than a silent fallback.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EqbenchError(
                f"--device {name} was asked for, but no CUDA GPU is visible. "
                "Use --device cpu (or auto)."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise EqbenchError(f"Unknown device '{name}'. Use auto, cpu, cuda or cuda:N.")


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA; a no-op on the CPU (fp32 there keeps results exact)."""
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
