"""Third-party checkpoint formats: detect them and map their keys onto timm's layout.

Each format's key layout follows the code that writes it:

* ``timm``: a plain timm ``state_dict`` (``.pth`` or ``.safetensors``).
* ``dino`` (Caron et al. 2021, ``facebookresearch/dino``): training checkpoints hold
  ``{"student": {"module.backbone.*", "module.head.*"}, "teacher": {"backbone.*", "head.*"},
  ...}``; released backbone weights are a plain state dict. The teacher is evaluated.
* ``ibot`` (Zhou et al. 2022, ``bytedance/ibot``): as DINO, with the backbone's ``masked_embed``.
* ``dinov2`` (Oquab et al. 2023): plain state dict with ``mask_token``, layer scale
  ``ls1.gamma``/``ls2.gamma``, ``register_tokens`` (timm: ``reg_token``) and, for chunked
  models, ``blocks.<chunk>.<i>.*``.
* ``mae`` (He et al. 2022): ``{"model": {encoder keys, "mask_token", "decoder_*"}}``.
* ``gtsa`` (Kim 2023, ``bok3948/GTSA``): ``{"model": {"base_encoder.*", "momentum_encoder.*",
  projector/predictor/rotation-head keys}}``; the momentum (teacher) encoder is evaluated.
* ``solo-learn`` (da Costa et al. 2022): Lightning checkpoint ``{"state_dict":
  {"backbone.*", "projector.*", "classifier.*", "momentum_backbone.*", ...}}``.
* ``lightly`` (lightly.ai): Lightning checkpoint whose module holds ``self.backbone``:
  ``backbone.vit.*`` (``MaskedVisionTransformerTIMM``), ``backbone.*`` (a timm model) or
  ``backbone.<i>.*`` (``nn.Sequential(*resnet.children()[:-1])`` of a torchvision ResNet).
* ``eqbench``: an eqbench checkpoint (loaded as it describes itself).

A converter returns the backbone's weights in timm's names plus the keys it dropped on purpose
(heads, decoders, the other branch); everything else must then match the architecture exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from eqbench.errors import CheckpointError
from eqbench.registry import Registry
from eqbench.zoo import FORMAT_NAMES


@dataclass
class Converted:
    """A backbone state dict in timm's names, and what was left out of it.

    Attributes:
        state: name → tensor, timm layout.
        dropped: keys of the file deliberately not loaded (heads, decoders, other branch).
        notes: format-specific facts for the card (which branch, renamed keys).
    """

    state: dict[str, Tensor]
    dropped: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


Converter = Callable[[dict[str, Any]], Converted]
FORMATS: Registry[Converter] = Registry("checkpoint format", "eqbench submit --help")


def _tensors(d: dict[str, Any]) -> dict[str, Tensor]:
    return {k: v for k, v in d.items() if isinstance(v, Tensor)}


def _strip(key: str, *prefixes: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def _split(
    state: dict[str, Tensor], keep: Callable[[str], str | None]
) -> tuple[dict[str, Tensor], list[str]]:
    """``keep(key)`` returns the new name, or ``None`` to drop the key."""
    out, dropped = {}, []
    for key, value in state.items():
        new = keep(key)
        if new is None:
            dropped.append(key)
        else:
            out[new] = value
    return out, sorted(dropped)


def _mapping(obj: dict[str, Any], key: str, fmt: str) -> dict[str, Any]:
    inner = obj.get(key)
    if not isinstance(inner, dict):
        raise CheckpointError(
            f"This is not a {fmt} checkpoint: it has no '{key}' mapping (top-level keys: "
            f"{', '.join(list(obj)[:6])}). Pass the right --format."
        )
    return inner


@FORMATS.register("timm")
def convert_timm(obj: dict[str, Any]) -> Converted:
    """A plain timm state dict (``module.`` prefixes stripped)."""
    state = _tensors(obj)
    if not state:
        for container in ("state_dict", "model", "module"):
            if isinstance(obj.get(container), dict):
                state = _tensors(obj[container])
                break
    return Converted({_strip(k, "module."): v for k, v in state.items()})


def _dino_like(obj: dict[str, Any], extra_drop: tuple[str, ...], fmt: str) -> Converted:
    if "teacher" in obj or "student" in obj:
        branch = "teacher" if "teacher" in obj else "student"
        state = _tensors(_mapping(obj, branch, fmt))
        other = [f"{b}.*" for b in ("student", "teacher") if b != branch and b in obj]

        def keep(key: str) -> str | None:
            key = _strip(key, "module.")
            if not key.startswith("backbone."):
                return None
            key = key[len("backbone.") :]
            return None if key.split(".")[0] in extra_drop else key

        out, dropped = _split(state, keep)
        return Converted(out, dropped + other, {"branch": branch})
    state = _tensors(obj)

    def keep_plain(key: str) -> str | None:
        key = _strip(key, "module.", "backbone.")
        return None if key.split(".")[0] in (*extra_drop, "head") else key

    out, dropped = _split(state, keep_plain)
    return Converted(out, dropped, {"branch": "backbone"})


@FORMATS.register("dino")
def convert_dino(obj: dict[str, Any]) -> Converted:
    """DINO: the teacher backbone of a training checkpoint, or released backbone weights."""
    return _dino_like(obj, (), "dino")


@FORMATS.register("ibot")
def convert_ibot(obj: dict[str, Any]) -> Converted:
    """iBOT: as DINO, dropping the backbone's ``masked_embed`` (the mask token)."""
    return _dino_like(obj, ("masked_embed",), "ibot")


_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


@FORMATS.register("dinov2")
def convert_dinov2(obj: dict[str, Any]) -> Converted:
    """DINOv2: drop ``mask_token``, rename ``register_tokens`` → ``reg_token``, un-chunk blocks."""
    state = convert_timm(obj).state
    renamed: dict[str, str] = {}

    def keep(key: str) -> str | None:
        if key == "mask_token":
            return None
        new = _CHUNKED.sub(r"blocks.\1.", key)
        if new == "register_tokens":
            new = "reg_token"
        if new != key:
            renamed[key] = new
        return new

    out, dropped = _split(state, keep)
    return Converted(out, dropped, {"renamed": len(renamed)})


@FORMATS.register("mae")
def convert_mae(obj: dict[str, Any]) -> Converted:
    """MAE: the encoder of ``obj["model"]`` (decoder and mask token dropped)."""
    state = _tensors(_mapping(obj, "model", "mae")) if "model" in obj else _tensors(obj)

    def keep(key: str) -> str | None:
        key = _strip(key, "module.")
        return None if key.startswith("decoder") or key == "mask_token" else key

    out, dropped = _split(state, keep)
    return Converted(out, dropped)


@FORMATS.register("gtsa")
def convert_gtsa(obj: dict[str, Any]) -> Converted:
    """GTSA: the momentum (teacher) encoder of ``obj["model"]``."""
    state = _tensors(_mapping(obj, "model", "gtsa"))
    branch = (
        "momentum_encoder"
        if any(k.startswith("momentum_encoder.") for k in state)
        else "base_encoder"
    )

    def keep(key: str) -> str | None:
        key = _strip(key, "module.")
        return key[len(branch) + 1 :] if key.startswith(branch + ".") else None

    out, dropped = _split(state, keep)
    return Converted(out, dropped, {"branch": branch})


@FORMATS.register("solo-learn")
def convert_solo_learn(obj: dict[str, Any]) -> Converted:
    """solo-learn: ``backbone.*`` of a Lightning checkpoint (momentum backbone, heads dropped)."""
    state = _tensors(_mapping(obj, "state_dict", "solo-learn"))

    def keep(key: str) -> str | None:
        return key[len("backbone.") :] if key.startswith("backbone.") else None

    out, dropped = _split(state, keep)
    return Converted(out, dropped, {"branch": "backbone"})


#: torchvision ResNet children, in ``nn.Sequential(*resnet.children()[:-1])`` order.
_RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


@FORMATS.register("lightly")
def convert_lightly(obj: dict[str, Any]) -> Converted:
    """lightly: ``backbone.*`` of a Lightning checkpoint, unwrapping ``MaskedVisionTransformerTIMM``
    (``backbone.vit.*``) and ``nn.Sequential`` ResNet trunks (``backbone.<i>.*``)."""
    state = _tensors(_mapping(obj, "state_dict", "lightly"))

    def keep(key: str) -> str | None:
        if not key.startswith("backbone."):
            return None
        key = key[len("backbone.") :]
        if key.startswith("vit."):
            return key[len("vit.") :]
        head, _, rest = key.partition(".")
        if head.isdigit():
            index = int(head)
            if index >= len(_RESNET_CHILDREN):
                return None
            return f"{_RESNET_CHILDREN[index]}.{rest}"
        return key

    out, dropped = _split(state, keep)
    return Converted(out, dropped, {"branch": "backbone"})


def detect_format(obj: dict[str, Any], metadata: dict[str, str]) -> str:
    """Guess a checkpoint's format from its structure.

    Raises:
        CheckpointError: the structure fits no format, or several equally (pass ``--format``).
    """
    if "eqbench" in obj or "eqbench" in metadata:
        return "eqbench"
    if "teacher" in obj or "student" in obj:
        branch = obj.get("teacher") or obj.get("student") or {}
        return "ibot" if any("masked_embed" in k for k in branch) else "dino"
    if "pytorch-lightning_version" in obj or (
        isinstance(obj.get("state_dict"), dict) and "hyper_parameters" in obj
    ):
        keys = list(obj.get("state_dict", {}))
        if any(k.startswith(("backbone.vit.", "backbone.0.")) for k in keys):
            return "lightly"
        if any(k.startswith("backbone.") for k in keys):
            raise CheckpointError(
                "This Lightning checkpoint could be solo-learn or lightly (both keep "
                "'backbone.*'). Pass --format solo-learn or --format lightly."
            )
    if isinstance(obj.get("model"), dict):
        keys = list(obj["model"])
        if any(k.startswith(("base_encoder.", "momentum_encoder.")) for k in keys):
            return "gtsa"
        if any(k.startswith("decoder") for k in keys) or "mask_token" in keys:
            return "mae"
    keys = list(_tensors(obj))
    if keys:
        if any(k in ("mask_token", "register_tokens") for k in keys) or any(
            _CHUNKED.match(k) for k in keys
        ):
            return "dinov2"
        return "timm"
    raise CheckpointError(
        f"Cannot tell the checkpoint's format (top-level keys: {', '.join(list(obj)[:6])}). "
        f"Pass --format (one of {', '.join(FORMAT_NAMES)})."
    )
