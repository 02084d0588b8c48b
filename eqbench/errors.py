"""User-facing errors.

Every error eqbench raises for bad input is an :class:`EqbenchError` whose message says what went
wrong *and* what to do about it. The CLI prints the message on one line and exits non-zero, with
no traceback.
"""

from __future__ import annotations


class EqbenchError(Exception):
    """An error caused by the user's input, with a message that names the remedy."""

    exit_code = 2


class ConfigError(EqbenchError):
    """A task file, config or option is malformed."""


class CheckpointError(EqbenchError):
    """A checkpoint is missing, corrupt, unsafe or does not match its architecture."""


class DatasetError(EqbenchError):
    """A dataset path is missing, empty or not in the expected layout."""


class MissingDependencyError(EqbenchError):
    """An optional dependency a task needs is not installed; the message names how to install it.

    ``eqbench eval`` skips such tasks with the message instead of failing the whole run.
    """
