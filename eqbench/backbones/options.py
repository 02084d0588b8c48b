"""The architecture options a backbone may be built with, by name, type and range.

Backbone options come from files: a checkpoint's header (``backbone.kwargs``) and a pretraining
config's ``backbone_options``. Passed on to ``timm.create_model`` unchecked, some of timm's own
options would open other files (``checkpoint_path``, ``pretrained_cfg_overlay={"file": ...}``),
download weights (``pretrained``) or crash deep inside timm (``patch_size: 0``). So every option
is checked here against an allowlist of architecture arguments before any model is built: an
unknown name, a wrong type or a value out of range is a :class:`~eqbench.errors.ConfigError`
naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eqbench.errors import ConfigError
from eqbench.registry import did_you_mean

#: The largest image side and patch side accepted (far beyond any real model; a bound keeps a
#: crafted header from allocating terabytes).
MAX_SIDE = 8192
#: The largest token width, depth, head and register count accepted.
MAX_WIDTH = 16384
MAX_DEPTH = 1024
MAX_TOKENS = 1024


@dataclass(frozen=True)
class Option:
    """One accepted option: a check of its value and a description of what it accepts."""

    check: Callable[[Any], bool]
    accepts: str


def _int(lo: int, hi: int) -> Option:
    return Option(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
        f"an integer in [{lo}, {hi}]",
    )


def _float(lo: float, hi: float, *, hi_open: bool = False) -> Option:
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return lo <= v < hi if hi_open else lo <= v <= hi

    return Option(check, f"a number in [{lo}, {hi}{')' if hi_open else ']'}")


def _bool() -> Option:
    return Option(lambda v: isinstance(v, bool), "true or false")


def _choice(*values: str) -> Option:
    return Option(lambda v: v in values, "one of " + ", ".join(repr(v) for v in values))


def _optional(option: Option) -> Option:
    return Option(lambda v: v is None or option.check(v), f"null or {option.accepts}")


def _rgb() -> Option:
    def check(v: Any) -> bool:
        return (
            isinstance(v, list | tuple)
            and len(v) == 3
            and all(_float(-1e3, 1e3).check(x) for x in v)
        )

    return Option(check, "a list of three numbers")


def _positive_rgb() -> Option:
    def check(v: Any) -> bool:
        return _rgb().check(v) and all(x > 0 for x in v)

    return Option(check, "a list of three positive numbers")


_RATE = _float(0.0, 1.0, hi_open=True)

#: Every option a backbone can be rebuilt with. The timm ones are ``VisionTransformer``
#: architecture arguments (CNNs take the drop rates); ``mean``/``std`` and ``grid`` are eqbench's
#: own (input normalisation, the pixel baseline's thumbnail). Nothing here names a file, a URL or
#: pretrained weights.
BACKBONE_OPTIONS: dict[str, Option] = {
    "img_size": _int(1, MAX_SIDE),
    "patch_size": _int(1, MAX_SIDE),
    "embed_dim": _int(1, MAX_WIDTH),
    "depth": _int(1, MAX_DEPTH),
    "num_heads": _int(1, MAX_WIDTH),
    "mlp_ratio": _float(1e-3, 64.0),
    "qkv_bias": _bool(),
    "qk_norm": _bool(),
    "init_values": _optional(_float(0.0, 1e3)),
    "class_token": _bool(),
    "no_embed_class": _bool(),
    "reg_tokens": _int(0, MAX_TOKENS),
    "pre_norm": _bool(),
    "fc_norm": _optional(_bool()),
    "global_pool": _choice("", "token", "avg", "avgmax", "max", "map"),
    "dynamic_img_pad": _bool(),
    "drop_rate": _RATE,
    "pos_drop_rate": _RATE,
    "patch_drop_rate": _RATE,
    "proj_drop_rate": _RATE,
    "attn_drop_rate": _RATE,
    "drop_path_rate": _RATE,
    "mean": _rgb(),
    "std": _positive_rgb(),
    "grid": _int(1, MAX_SIDE),
}


def check_backbone_options(options: Mapping[str, Any], where: str) -> None:
    """Raise unless every option is an allowed architecture argument with a valid value.

    Args:
        options: option name → value (a checkpoint header's ``kwargs``, ``backbone_options``).
        where: names the source in the message (``"Checkpoint 'x.pt'"``).

    Raises:
        ConfigError: an option that is not an architecture argument (with a did-you-mean), or a
            value of the wrong type or out of range.
    """
    for name, value in options.items():
        option = BACKBONE_OPTIONS.get(name) if isinstance(name, str) else None
        if option is None:
            hint = did_you_mean(str(name), list(BACKBONE_OPTIONS))
            raise ConfigError(
                f"{where}: backbone option {str(name)[:60]!r} is not an architecture option "
                f"eqbench accepts.{hint} Allowed: {', '.join(sorted(BACKBONE_OPTIONS))}."
            )
        if not option.check(value):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ConfigError(
                f"{where}: backbone option '{name}' must be {option.accepts}, got {shown}."
            )
