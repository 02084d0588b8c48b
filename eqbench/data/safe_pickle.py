"""A restricted unpickler for data files that should hold only numpy arrays and plain containers.

``pickle.load`` runs whatever callable a file names, so a tampered data file can execute code.
:class:`RestrictedUnpickler` resolves only an allowlist of globals (numpy's array, dtype and scalar
reconstructors and a few builtin containers); any other global raises an error naming it. Lists,
dicts, tuples, strings, bytes and numbers need no globals and load as usual.

Real CIFAR batches were pickled by Python 2 (protocol 2): their ``str`` objects load as ``str``
with ``encoding="latin1"`` (the default here) and as ``bytes`` with ``encoding="bytes"``.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from eqbench.errors import DatasetError, EqbenchError

DEFAULT_REASON = "the file should hold only numpy arrays and builtin containers"


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` at protocol < 3 (latin1 only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise pickle.UnpicklingError(
            f"_codecs.encode with encoding {encoding!r} is not how bytes are pickled"
        )
    return obj.encode("latin1", errors)


def _numpy_globals() -> dict[str, Any]:
    """numpy's reconstructors, found through numpy itself (their module moved in numpy 2)."""
    array = np.zeros(1, dtype=np.uint8)
    return {
        "_reconstruct": array.__reduce__()[0],
        "_frombuffer": array.__reduce_ex__(5)[0],
        "scalar": np.uint8(0).__reduce__()[0],
    }


def _allowlist() -> dict[tuple[str, str], Any]:
    np_funcs = _numpy_globals()
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("__builtin__", "bytearray"): bytearray,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = np_funcs["_reconstruct"]
        allowed[(f"{core}.multiarray", "scalar")] = np_funcs["scalar"]
        allowed[(f"{core}.numeric", "_frombuffer")] = np_funcs["_frombuffer"]
    # numpy dtypes of scalars pickled by numpy >= 1.25 (e.g. numpy.dtypes.UInt8DType) are
    # reconstructed through numpy.dtype, so the classes themselves need not be allowed.
    return allowed


_ALLOWED = _allowlist()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allowlisted globals.

    Args:
        file: binary file object to read.
        source: name of the file, for error messages.
        reason: why only plain data is expected, for error messages.
        error: exception class raised for refused globals.
        encoding: how Python 2 ``str`` objects are decoded (``latin1`` or ``bytes``).
    """

    def __init__(
        self,
        file: IO[bytes],
        *,
        source: str,
        reason: str = DEFAULT_REASON,
        error: type[EqbenchError] = DatasetError,
        encoding: str = "latin1",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self.reason = reason
        self.error = error

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise self.error(
                f"refusing to unpickle {module}.{name} from {self.source}: {self.reason}; "
                "this file may carry code. Replace it with a clean copy of the data."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise self.error(
            f"refusing to unpickle a persistent id from {self.source}: {self.reason}; "
            "this file may carry code. Replace it with a clean copy of the data."
        )


def load(
    path: str | Path,
    *,
    reason: str = DEFAULT_REASON,
    error: type[EqbenchError] = DatasetError,
    encoding: str = "latin1",
) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    Args:
        path: pickle file to read.
        reason: why only plain data is expected, for error messages.
        error: exception class for refused globals and unreadable files.
        encoding: how Python 2 ``str`` objects are decoded (``latin1`` or ``bytes``).

    Returns:
        The unpickled object.

    Raises:
        EqbenchError: (of class ``error``) when the file names a global outside the allowlist,
            is truncated, or is not a pickle.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            return RestrictedUnpickler(
                f, source=str(path), reason=reason, error=error, encoding=encoding
            ).load()
    except EqbenchError:
        raise
    except OSError as exc:
        raise error(f"Cannot read '{path}': {exc}. Check the path and its permissions.") from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise error(
            f"'{path}' is not a readable pickle ({type(exc).__name__}: {exc}); it may be "
            "truncated or corrupt. Replace it with a fresh copy of the data."
        ) from exc
