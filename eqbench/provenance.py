"""What a result records about where it was computed: versions, git commit, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import eqbench

PACKAGES = ("torch", "torchvision", "timm", "numpy", "scikit-learn", "pandas", "safetensors")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can move a number."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the eqbench checkout (with ``-dirty`` if modified), or ``None``."""
    root = Path(eqbench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    """A human-readable device description."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, commit and device, for a result record."""
    return {
        "eqbench_version": eqbench.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "device": device_name(device),
    }
