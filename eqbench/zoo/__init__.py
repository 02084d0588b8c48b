"""The model zoo: third-party checkpoint formats, cards and ``eqbench submit``."""

#: Checkpoint formats ``eqbench submit`` reads (:mod:`eqbench.zoo.formats` maps their keys).
FORMAT_NAMES = (
    "eqbench",
    "timm",
    "dino",
    "dinov2",
    "ibot",
    "mae",
    "gtsa",
    "solo-learn",
    "lightly",
)
