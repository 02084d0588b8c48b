"""The model zoo: cards and ``eqbench submit``.

Checkpoint formats live in :mod:`eqbench.checkpoints.formats`.
"""
