"""Keep freed host memory in the process, so forward passes on the CPU stop page-faulting.

glibc hands a freed block above its mmap threshold (128 KiB at start, rising with use up to
32 MiB) straight back to the operating system, and trims the top of its heap once enough is
free there. A PyTorch forward pass on the CPU frees and re-allocates activations of a few MiB at
every layer, so it maps and faults them in afresh each time: ViT-Ti/16 at 64 px, batch 256,
took ~24,000 page faults per batch and ~15 % of its time in the kernel
(``benchmarks/feature_extraction.py``). PyTorch's CPU performance guides fix this by preloading
jemalloc or tcmalloc; glibc's own ``mallopt`` does the same with nothing to install: a fixed
mmap threshold at its largest allowed value (32 MiB) and no trimming. Freed memory then stays
in the process for the next batch; peak resident memory does not change (measured), the
process just does not shrink after a peak.

:func:`keep_freed_memory` is called by the command line and the benchmarks, not on import:
it changes a process-wide setting, which a program that imports eqbench may not want.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: The largest mmap threshold glibc accepts on 64-bit systems (``HEAP_MAX_SIZE / 2``).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Set to ``0`` to leave the allocator as it is.
ENV_SWITCH = "EQBENCH_KEEP_FREED_MEMORY"

_applied = False


def _user_tuned() -> str | None:
    """Why to leave the allocator alone: the user chose its settings, or another allocator."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"{ENV_SWITCH}=0"
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        if name in os.environ:
            return name
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload or "mimalloc" in preload:
        return "LD_PRELOAD"
    return None


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory for reuse (see the module docstring).

    Returns whether the setting is in force: ``False`` off Linux/glibc, when the user set the
    allocator up (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``, a preloaded jemalloc, tcmalloc
    or mimalloc) or ``EQBENCH_KEEP_FREED_MEMORY=0``, or when glibc refuses. Safe to call twice.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    reason = _user_tuned()
    if reason is not None:
        log.debug("allocator left as set up (%s)", reason)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt returns 1 on success; setting either disables glibc's sliding threshold
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = ok and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError) as exc:  # no usable libc: run with the defaults
        log.debug("mallopt unavailable: %s", exc)
        return False
    _applied = ok
    return ok
