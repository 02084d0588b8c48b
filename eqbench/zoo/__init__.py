"""The model zoo: third-party checkpoint formats, cards and ``eqbench submit``."""
