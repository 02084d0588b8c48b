"""Third-party checkpoint formats: detect them and unwrap the backbone's weights.

Each converter mirrors the code its project loads a backbone with (cited per function) and hands
the backbone's weights, in the project's own names, to the upstream conversion into timm:
:func:`eqbench.checkpoints.spec.adapt_timm_state` runs timm's own ``checkpoint_filter_fn``
(``timm/models/vision_transformer.py``) for ViTs, which converts DINOv2's hub layout
(``_convert_dinov2``: ``register_tokens`` → ``reg_token``, the CLS position folded into
``cls_token``, ``mask_token`` dropped) and resamples ``pos_embed`` to the model's grid.

Key layouts, as each project's save code writes them:

* ``timm``: a plain timm ``state_dict`` (``.pth`` or ``.safetensors``), or ``{"model": ...}``
  (DeiT-style releases, with a classifier head).
* ``dino`` (Caron et al. 2021, ``facebookresearch/dino``): training checkpoints hold
  ``{"student": {"module.backbone.*", "module.head.*"}, "teacher": {"backbone.*", "head.*"},
  "args": Namespace, ...}`` (``main_dino.py:278-288``); released backbone weights are a plain
  state dict. The teacher is evaluated.
* ``ibot`` (Zhou et al. 2022, ``bytedance/ibot``): training checkpoints as DINO
  (``main_ibot.py:348-358``), the student's backbone with ``masked_embed``; released backbones
  are ``{"state_dict": {...}}`` (``checkpoint_teacher.pth``, or the student's with
  ``masked_embed``).
* ``dinov2`` (Oquab et al. 2023): the hub's plain state dict of ``DinoVisionTransformer``
  (``pos_embed`` including the CLS position, ``register_tokens``, ``mask_token``, layer scale
  ``ls1.gamma``) or the training run's ``{"teacher": {"backbone.*", "dino_head.*",
  "ibot_head.*"}}`` (``dinov2/train/train.py:123-131``), blocks possibly chunked
  ``blocks.<chunk>.<i>.*``.
* ``mae`` (He et al. 2022): ``{"model": {encoder keys, "mask_token", "decoder_*"}, "args", ...}``
  (``util/misc.py:301-307``); the released encoder is ``{"model": {encoder keys}}``.
* ``gtsa`` (Kim 2023, ``bok3948/GTSA``): ``{"model": {"base_encoder.*", "momentum_encoder.*",
  projector/predictor/rotation-head keys}}``; the momentum (teacher) encoder is evaluated.
* ``solo-learn`` (da Costa et al. 2022): Lightning checkpoint ``{"state_dict":
  {"backbone.*", "projector.*", "classifier.*", "momentum_backbone.*", ...}}``.
* ``lightly`` (lightly.ai): Lightning checkpoint whose module holds ``self.backbone``:
  ``backbone.vit.*`` plus ``backbone.mask_token`` (``MaskedVisionTransformerTIMM``),
  ``backbone.*`` (a timm model) or ``backbone.<i>.*`` (``nn.Sequential(*resnet.children()[:-1])``
  of a torchvision ResNet).
* ``eqbench``: an eqbench checkpoint (loaded as it describes itself).

A converter returns the backbone's weights plus the keys it dropped on purpose (heads, decoders,
mask tokens, the other branch); everything else must then match the architecture exactly.
Each format also names the input normalisation its project trains with
(:data:`NORMALIZATION`), which the zoo card records.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from eqbench.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from eqbench.errors import CheckpointError
from eqbench.registry import Registry


@dataclass
class Converted:
    """A backbone state dict in its project's names, and what was left out of it.

    Attributes:
        state: name → tensor, the layout timm's conversion reads (``module.``/``backbone.``
            wrappers removed).
        dropped: keys of the file deliberately not loaded (heads, decoders, mask tokens, the
            other branch).
        notes: format-specific facts for the card (which branch, renamed keys).
    """

    state: dict[str, Tensor]
    dropped: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Normalization:
    """Input normalisation a project trains with, and where that is written."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


def _imagenet(source: str) -> Normalization:
    return Normalization(IMAGENET_MEAN, IMAGENET_STD, source)


#: The normalisation each format's project trains with. Formats not listed (``timm``, ``gtsa``)
#: take the architecture's timm ``pretrained_cfg``; ``eqbench`` checkpoints record their own.
NORMALIZATION: dict[str, Normalization] = {
    "dino": _imagenet("facebookresearch/dino main_dino.py:431 (ImageNet mean/std)"),
    "ibot": _imagenet("bytedance/ibot main_ibot.py:586 (ImageNet mean/std)"),
    "mae": _imagenet("facebookresearch/mae main_pretrain.py:127 (ImageNet mean/std)"),
    "dinov2": _imagenet("facebookresearch/dinov2 dinov2/data/transforms.py:42-43 (ImageNet)"),
    "solo-learn": _imagenet(
        "vturrisi/solo-learn solo/data/pretrain_dataloader.py:210-211 (ImageNet mean/std)"
    ),
    "lightly": _imagenet("lightly-ai/lightly lightly/transforms/utils.py:1 IMAGENET_NORMALIZE"),
}

Converter = Callable[[dict[str, Any]], Converted]
FORMATS: Registry[Converter] = Registry("checkpoint format", "eqbench ls formats")


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
    """A plain timm state dict (``module.`` prefixes stripped), or one inside ``state_dict`` /
    ``model`` / ``module`` (timm's ``checkpoint_filter_fn`` reads ``model`` and ``state_dict``)."""
    state = _tensors(obj)
    if not state:
        for container in ("state_dict", "model", "module"):
            if isinstance(obj.get(container), dict):
                state = _tensors(obj[container])
                break
    return Converted({_strip(k, "module."): v for k, v in state.items()})


def _checkpoint_key(obj: dict[str, Any], keys: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """The first of ``keys`` that holds a mapping (DINO's and iBOT's ``--checkpoint_key``),
    else the object itself (a released backbone)."""
    for key in keys:
        if isinstance(obj.get(key), dict):
            return obj[key], key
    return obj, "backbone"


def _dino_like(
    obj: dict[str, Any], keys: tuple[str, ...], extra_drop: tuple[str, ...]
) -> Converted:
    """As ``utils.load_pretrained_weights`` (dino ``utils.py:71-80``, ibot ``utils.py:111-121``):
    take the ``checkpoint_key`` mapping, strip ``module.`` and ``backbone.``. Keys outside the
    backbone (``head.*``, iBOT's ``masked_embed``) are dropped, as its non-strict load ignores
    them."""
    inner, branch = _checkpoint_key(obj, keys)
    state = _tensors(inner)
    wrapped = any(_strip(k, "module.").startswith("backbone.") for k in state)
    other = [f"{b}.*" for b in ("student", "teacher") if b != branch and b in obj]

    def keep(key: str) -> str | None:
        key = _strip(key, "module.")
        if wrapped and not key.startswith("backbone."):
            return None  # the MultiCropWrapper's head
        key = _strip(key, "backbone.")
        return None if key.split(".")[0] in ("head", *extra_drop) else key

    out, dropped = _split(state, keep)
    return Converted(out, dropped + other, {"branch": branch})


@FORMATS.register("dino")
def convert_dino(obj: dict[str, Any]) -> Converted:
    """DINO: the teacher backbone of a training checkpoint, or released backbone weights."""
    return _dino_like(obj, ("teacher", "student"), ())


@FORMATS.register("ibot")
def convert_ibot(obj: dict[str, Any]) -> Converted:
    """iBOT: as DINO, also reading the released ``{"state_dict": ...}`` files and dropping the
    student's ``masked_embed`` (the mask token, ibot ``models/vision_transformer.py:172``)."""
    return _dino_like(obj, ("teacher", "state_dict", "student"), ("masked_embed",))


_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


@FORMATS.register("dinov2")
def convert_dinov2(obj: dict[str, Any]) -> Converted:
    """DINOv2: the hub state dict, or the teacher backbone of ``teacher_checkpoint.pth``
    (``dinov2/train/train.py:123-131``), with chunked blocks un-chunked
    (``dinov2/models/vision_transformer.py:160`` keeps the global block index).

    ``mask_token`` stays in the state: timm's ``checkpoint_filter_fn`` recognises the DINOv2
    layout by it, drops it and converts ``register_tokens`` and ``pos_embed``
    (``_convert_dinov2``).
    """
    inner, branch = _checkpoint_key(obj, ("teacher",))
    state = convert_timm(inner).state
    wrapped = any(k.startswith("backbone.") for k in state)
    renamed: dict[str, str] = {}

    def keep(key: str) -> str | None:
        if wrapped:
            if not key.startswith("backbone."):
                return None  # dino_head / ibot_head
            key = key[len("backbone.") :]
        new = _CHUNKED.sub(r"blocks.\1.", key)
        if new != key:
            renamed[key] = new
        return new

    out, dropped = _split(state, keep)
    return Converted(out, dropped, {"branch": branch, "renamed": len(renamed)})


@FORMATS.register("mae")
def convert_mae(obj: dict[str, Any]) -> Converted:
    """MAE: the encoder of ``obj["model"]`` as MAE's fine-tuning reads it
    (``main_finetune.py:237``); the decoder and its ``mask_token`` are dropped."""
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
    """solo-learn: ``backbone.*`` of a Lightning checkpoint, as ``main_linear.py:74-84`` reads
    it (momentum backbone, heads dropped)."""
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
    (``backbone.vit.*``; its ``backbone.mask_token``, lightly
    ``models/modules/masked_vision_transformer_timm.py:44-49``, is dropped) and ``nn.Sequential``
    ResNet trunks (``backbone.<i>.*``)."""
    state = _tensors(_mapping(obj, "state_dict", "lightly"))

    def keep(key: str) -> str | None:
        if not key.startswith("backbone.") or key == "backbone.mask_token":
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


def _names(state: dict[str, Any]) -> set[str]:
    """Key names with DDP's ``module.`` and the multi-crop wrapper's ``backbone.`` removed."""
    return {_strip(k, "module.", "backbone.") for k in state}


def _is_vit_backbone(names: set[str]) -> bool:
    return "cls_token" in names and any(n.startswith("blocks.") for n in names)


def _detect_branches(obj: dict[str, Any]) -> str:
    branch = obj.get("teacher") or obj.get("student") or {}
    names = _names(branch) | _names(obj.get("student") or {})
    if names & {"mask_token", "register_tokens"} or any("dino_head." in k for k in branch):
        return "dinov2"
    return "ibot" if "masked_embed" in names else "dino"


def _detect_lightning(obj: dict[str, Any]) -> str | None:
    keys = list(obj.get("state_dict", {}))
    if any(k.startswith(("backbone.vit.", "backbone.0.")) for k in keys):
        return "lightly"
    if any(k.startswith("backbone.") for k in keys):
        raise CheckpointError(
            "This Lightning checkpoint could be solo-learn or lightly (both keep "
            "'backbone.*'). Pass --format solo-learn or --format lightly."
        )
    return None


def _detect_model(model: dict[str, Any]) -> str:
    keys = list(model)
    if any(k.startswith(("base_encoder.", "momentum_encoder.")) for k in keys):
        return "gtsa"
    if any(k.startswith("decoder") for k in keys) or "mask_token" in keys:
        return "mae"
    names = _names(model)
    if _is_vit_backbone(names) and not any(n.startswith("head.") for n in names):
        return "mae"  # MAE's released encoder: {"model": encoder}, no classifier
    return "timm"  # DeiT-style releases keep their classifier under "model"


def detect_format(obj: dict[str, Any], metadata: dict[str, str]) -> str:
    """Guess a checkpoint's format from its structure (see the module docstring).

    Raises:
        CheckpointError: the structure fits no format, or several equally (pass ``--format``).
    """
    if "eqbench" in obj or "eqbench" in metadata:
        return "eqbench"
    if isinstance(obj.get("teacher"), dict) or isinstance(obj.get("student"), dict):
        return _detect_branches(obj)
    if "pytorch-lightning_version" in obj or (
        isinstance(obj.get("state_dict"), dict) and "hyper_parameters" in obj
    ):
        found = _detect_lightning(obj)
        if found:
            return found
    elif isinstance(obj.get("state_dict"), dict):
        names = _names(obj["state_dict"])
        if _is_vit_backbone(names) or "masked_embed" in names:
            return "ibot"  # iBOT's released checkpoint_teacher.pth / checkpoint_student.pth
    if isinstance(obj.get("model"), dict):
        return _detect_model(obj["model"])
    names = _names(_tensors(obj))
    if names:
        if names & {"mask_token", "register_tokens"} or any(_CHUNKED.match(k) for k in names):
            return "dinov2"
        if "masked_embed" in names:
            return "ibot"
        if _is_vit_backbone(names) and not any(n.startswith("head.") for n in names):
            # DINO's released backbones (dino_deitsmall16_pretrain.pth, ...) are the state dict of
            # its VisionTransformer built with num_classes=0, whose head is nn.Identity (dino
            # vision_transformer.py:159, hubconf.py); timm's own state dicts keep "head.*"
            return "dino"
        return "timm"
    raise CheckpointError(
        f"Cannot tell the checkpoint's format: it holds no tensors at its top level, and none "
        f"of the known wrappers ('teacher'/'student', 'model', a 'state_dict' of a ViT or a "
        f"Lightning checkpoint); top-level keys: {', '.join(list(obj)[:6])}. "
        f"Pass --format (one of {', '.join(format_names())})."
    )


def format_names() -> tuple[str, ...]:
    """Every format ``eqbench submit --format`` and zoo cards accept: eqbench's own, then the
    converters registered now (read from :data:`FORMATS` on each call, so a converter registered
    later, by a plugin, is accepted and listed too)."""
    return ("eqbench", *FORMATS.names())
