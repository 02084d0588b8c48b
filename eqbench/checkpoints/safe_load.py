"""Load checkpoint files without running code from them.

``.safetensors`` files go through safetensors; everything else (``.pt``, ``.pth``, ``.bin``,
``.ckpt``) through ``torch.load(..., weights_only=True)``. There is no fallback to
``weights_only=False``: a checkpoint that needs code to load is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import pickletools
import re
import warnings
from pathlib import Path, PosixPath, PurePosixPath, PureWindowsPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from eqbench.errors import CheckpointError

logger = logging.getLogger(__name__)

#: Suffixes read with ``torch.load`` (any other non-safetensors suffix is tried the same way).
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")

#: Inert plain-data classes that training checkpoints carry in their ``args``, allowed (only while
#: eqbench reads a file) under ``weights_only``. DINO, iBOT, MAE and GTSA save their
#: ``argparse.Namespace`` (dino ``main_dino.py:283``, mae ``util/misc.py:306``); their SLURM
#: launchers put a ``pathlib.PosixPath`` in it (dino ``run_with_submitit.py:82``, mae
#: ``submitit_pretrain.py:78``). Rebuilding either only stores strings: no file is touched and no
#: code of the checkpoint's runs. Python 3.13 pickles paths as ``pathlib._local.*``; a Windows
#: path comes back as a ``PureWindowsPath``, which every OS can build.
_INERT_GLOBALS: list[Any] = [
    argparse.Namespace,
    *[
        (cls, f"{module}.{name}")
        for module in ("pathlib", "pathlib._local")
        for name, cls in (
            ("PosixPath", PosixPath),
            ("PurePosixPath", PurePosixPath),
            ("WindowsPath", PureWindowsPath),
            ("PureWindowsPath", PureWindowsPath),
        )
    ],
]


def _one_line(text: str, limit: int = 200) -> str:
    """Collapse whitespace and shorten ``text`` for a one-line error message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def corrupt_error(path: str | os.PathLike[str], detail: str) -> CheckpointError:
    """The error for a file that cannot be parsed."""
    return CheckpointError(
        f"Checkpoint '{path}' is truncated or corrupt ({_one_line(detail)}). "
        "Re-download or re-save it."
    )


def needs_code_error(path: str | os.PathLike[str], global_name: str) -> CheckpointError:
    """The error for a pickle that would import ``global_name`` (a class or function) to load."""
    return CheckpointError(
        f"Checkpoint '{path}' contains Python objects that need code to load ({global_name}); "
        "eqbench loads only tensors and plain data (weights_only=True). "
        "Re-save it as a state dict or .safetensors."
    )


_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH_OPS = frozenset({"MEMOIZE", "FRAME", "PROTO", *_PUT_OPS})


def _allowed_globals() -> set[str]:
    """Globals torch's ``weights_only`` unpickler accepts (best effort: a private torch API)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # pragma: no cover - depends on torch internals
        return set()
    for obj in torch.serialization.get_safe_globals():
        target = obj[0] if isinstance(obj, tuple) else obj
        allowed.add(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    return allowed


def pickle_globals(path: Path) -> list[str] | None:
    """The globals a plain pickle file would import, found by *parsing* it (nothing runs).

    Used where torch's safe unpickler stops before naming the global (pickle protocol 4+ files
    fail on their first ``FRAME`` opcode).

    Returns:
        ``"module.name"`` strings in file order, or ``None`` if the file is not one complete
        pickle.
    """
    found: list[str] = []
    pushed: list[Any] = []  # approximate stack: strings we can name, None for anything else
    memo: dict[int, Any] = {}
    try:
        with open(path, "rb") as fh:
            for opcode, arg, _pos in pickletools.genops(fh):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL":
                    module, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])[:2]
                    ok = isinstance(module, str) and isinstance(attr, str)
                    found.append(f"{module}.{attr}" if ok else "an unnamed global")
                if name in _STRING_OPS:
                    pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
                elif name in _GET_OPS:
                    pushed.append(memo.get(arg) if isinstance(arg, int) else None)
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in _PUT_OPS:
                    memo[arg if isinstance(arg, int) else -1] = pushed[-1] if pushed else None
                elif name not in _NO_PUSH_OPS:
                    pushed.append(None)
    except Exception:  # not a (complete) pickle: the caller reports corruption
        return None
    return found


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint '{path}' does not exist. Check the path (relative paths are resolved "
            f"from {Path.cwd()})."
        )
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint '{path}' is not a file. Pass the checkpoint file itself."
        )


def _load_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        state: dict[str, Any] = dict(load_file(str(path), device="cpu"))
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        if isinstance(err, PermissionError):
            raise CheckpointError(
                f"Checkpoint '{path}' cannot be read (permission denied). Fix its permissions."
            ) from None
        raise corrupt_error(path, str(err) or type(err).__name__) from None
    return state, metadata


def _load_torch(path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            # Plain pickles of protocol 4+ are refused below with a clearer message.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            with torch.serialization.safe_globals(_INERT_GLOBALS):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(
            f"Checkpoint '{path}' cannot be read (permission denied). Fix its permissions."
        ) from None
    except pickle.UnpicklingError as err:
        message = str(err)
        # A plain (non-zip) pickle: list every global it would import, parsed without running.
        found = pickle_globals(path) or []
        allowed = _allowed_globals()
        blocked = list(dict.fromkeys(g for g in found if g not in allowed))
        if blocked:
            raise needs_code_error(path, ", ".join(blocked[:3])) from None
        match = _GLOBAL_RE.search(message)  # a torch.save zip: torch names the first global
        if match:
            raise needs_code_error(path, match.group(1)) from None
        if "Unsupported global" in message or "unrecognized function" in message:
            raise needs_code_error(path, "an unsupported global") from None
        detail = message.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        raise corrupt_error(
            path, f"unreadable pickle, not written by torch.save or damaged: {detail}"
        ) from None
    except Exception as err:  # torch reports damage as EOFError, KeyError, OSError, RuntimeError...
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise corrupt_error(path, detail) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"Checkpoint '{path}' holds a {type(obj).__name__}, not a dict of tensors. "
            "Re-save it as a state dict (torch.save(model.state_dict(), path))."
        )
    return obj


def load_state_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a checkpoint file safely.

    Args:
        path: a ``.safetensors`` file, or a torch file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``).

    Returns:
        ``(state, metadata)``: the file's top-level dict (for safetensors: name → tensor) and
        the safetensors header metadata (``{}`` for torch files).

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or needs code to load.
    """
    file = Path(path)
    _check_file(file)
    if file.suffix.lower() == ".safetensors":
        state, metadata = _load_safetensors(file)
    else:
        if file.suffix.lower() not in TORCH_SUFFIXES:
            logger.debug("reading %s with torch.load (unrecognised suffix)", file)
        state, metadata = _load_torch(file), {}
    logger.debug("loaded %s: %d top-level entries", file, len(state))
    return state, metadata
