"""Model specs: the loaders of paths and of the ``timm:``, ``hf-hub:`` and ``baseline:`` schemes.

One string names every model eqbench can evaluate (:func:`eqbench.models.load_model`; the
schemes are registered here and in :mod:`eqbench.zoo.load`, :mod:`eqbench.checkpoints.schemes`).
Accepted forms:

* ``path/to/checkpoint.pt`` (or ``.pth``, ``.ckpt``, ``.safetensors``): an eqbench checkpoint;
* ``timm:<name>``: a timm architecture with random weights (seed 0; recorded as "random init");
* ``timm:<name>.<tag>``: timm's pretrained weights for that tag (``vit_small_patch16_224.dino``),
  read from the local Hugging Face cache, never downloaded (:mod:`eqbench.checkpoints.hub_cache`);
* ``hf-hub:<org>/<name>``: a timm model on the Hugging Face hub (its ``config.json`` and weights),
  from the local cache likewise;
* ``timm:<name>:<weights.pth|.safetensors>``: a timm architecture with local weights
  (``module.`` prefixes stripped, classifier head dropped, ``pos_embed`` resampled);
* ``baseline:pixels`` / ``baseline:pixels:<grid>``: the raw-pixel baseline;
* ``baseline:random:<arch>``: a randomly initialised backbone (seed 0, deterministic);
* ``zoo:<id>``: a model-zoo card (``model_zoo/<id>.yaml``; :mod:`eqbench.zoo`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor

from eqbench.backbones import Encoder, PixelEncoder, TimmEncoder, create_encoder
from eqbench.backbones.input_size import size_multiple, snap_size
from eqbench.checkpoints.eqbench_format import check_state_dict, load_eqbench_checkpoint
from eqbench.checkpoints.hub_cache import hf_hub_weights, timm_tag_weights
from eqbench.checkpoints.safe_load import load_state_file
from eqbench.checkpoints.schemes import accepted_forms, scheme
from eqbench.errors import CheckpointError, EqbenchError

logger = logging.getLogger(__name__)

#: Seed of every random initialisation done here.
RANDOM_INIT_SEED = 0
#: What ``info["weights"]`` (and the result's ``weights``) says of randomly initialised models.
RANDOM_INIT = f"random init (seed {RANDOM_INIT_SEED})"
#: Nested state-dict containers unwrapped from third-party weight files.
_STATE_CONTAINERS = ("state_dict", "model", "module")
_CHUNK = 1 << 20

T = TypeVar("T")


@dataclass
class LoadedModel:
    """A model ready to evaluate.

    Attributes:
        model_id: stable name for results (``timm:<name>``, ``baseline:random:<arch>``, the
            checkpoint's ``name`` or file stem).
        sha256: hash of the weights: of the file when there is one, else of the state dict.
        encoder: the backbone, in eval mode.
        spec: the spec string it was loaded from.
        info: where it came from (checkpoint header, dropped keys, ...).
    """

    model_id: str
    sha256: str
    encoder: Encoder
    spec: str
    info: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_state_dict(state: Mapping[str, Any], salt: str = "") -> str:
    """Hex SHA-256 over ``salt`` and each entry's name, dtype, shape and raw bytes (sorted keys).

    Non-tensor entries are hashed through their ``repr``.
    """
    digest = hashlib.sha256()
    digest.update(salt.encode("utf-8") + b"\0")
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode("utf-8") + b"\0")
        if isinstance(value, Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode() + b"\0")
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode("utf-8") + b"\0")
    return digest.hexdigest()


def _seeded(build: Callable[[], T]) -> T:
    """Run ``build`` with the torch RNG seeded to :data:`RANDOM_INIT_SEED`, restoring it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()


def build_seeded_encoder(
    arch: str,
    img_size: int,
    spec: str,
    *,
    normalization: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Encoder:
    """``create_encoder(arch)`` with the seeded RNG, built for ``img_size`` snapped to a size the
    architecture accepts (:func:`~eqbench.backbones.input_size.snap_size`: 64 → 70 for patch 14),
    so that weights are resampled once, to the grid the tasks will use.

    Args:
        normalization: ``{"mean", "std"}`` to use instead of the architecture's defaults.
        options: architecture arguments (checked against the backbone allowlist).
    """
    kw = {k: tuple(normalization[k]) for k in ("mean", "std")} if normalization else {}
    kw.update(options or {})
    try:
        encoder = _seeded(lambda: create_encoder(arch, img_size=img_size, **kw))
        snapped = snap_size(img_size, size_multiple(encoder))
        if snapped != img_size:
            encoder = _seeded(lambda: create_encoder(arch, img_size=snapped, **kw))
    except EqbenchError as err:
        raise CheckpointError(f"Model spec '{spec}': {err}") from None
    return encoder


def _unwrap_state(state: dict[str, Any]) -> dict[str, Any]:
    """The tensor dict inside ``{"state_dict": ...}``/``{"model": ...}`` wrappers."""
    while not any(isinstance(v, Tensor) for v in state.values()):
        inner = next((state[k] for k in _STATE_CONTAINERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    return state


def _head_prefixes(encoder: TimmEncoder) -> tuple[str, ...]:
    cfg = dict(getattr(encoder.model, "pretrained_cfg", None) or {})
    classifier = cfg.get("classifier") or ()
    names = [classifier] if isinstance(classifier, str) else list(classifier)
    names += ["head", "head_dist", "fc", "classifier"]
    return tuple(f"{n}." for n in dict.fromkeys(names))


def _vit_filter(
    model: VisionTransformer, state: dict[str, Any]
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """timm's own conversion of ViT weights (``checkpoint_filter_fn``,
    ``timm/models/vision_transformer.py``): DINOv2's hub layout (``_convert_dinov2``: drops
    ``mask_token``, ``register_tokens`` → ``reg_token``, the CLS position of ``pos_embed`` added
    to ``cls_token`` for ``no_embed_class`` models), ``pos_embed`` resampled to the model's grid.

    Returns:
        ``(state, keys the conversion left out, notes)``.
    """
    before = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)}
    out = checkpoint_filter_fn(dict(state), model)
    renamed = {"register_tokens"} | {k for k in before if re.search(r"\.mlp\.w(12|3)\.", k)}
    lost = sorted(k for k in before if k not in out and k not in renamed)
    notes: dict[str, Any] = {}
    pos = out.get("pos_embed")
    if (
        isinstance(pos, Tensor)
        and "pos_embed" in before
        and tuple(pos.shape) != before["pos_embed"]
    ):
        notes["resampled_pos_embed"] = [list(before["pos_embed"]), list(pos.shape)]
    if "register_tokens" in before:
        notes["timm_conversion"] = "_convert_dinov2"
    return out, lost, notes


def adapt_timm_state(
    encoder: TimmEncoder, state: dict[str, Any]
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Make third-party weights fit ``encoder.model`` as timm's checkpoint loading would.

    Strips ``module.`` prefixes and drops classifier-head keys the headless model lacks; ViTs then
    go through timm's own ``checkpoint_filter_fn`` (:func:`_vit_filter`), other models have
    ``pos_embed`` resampled to the model's patch grid.

    Args:
        encoder: the headless timm encoder.
        state: name → tensor, as read from the file.

    Returns:
        ``(state, dropped_keys, notes)``; ``notes`` records a resampled ``pos_embed``.
    """
    model = encoder.model
    expected = model.state_dict()
    state = _unwrap_state(state)
    stripped: dict[str, Any] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        stripped[key] = value
    heads = _head_prefixes(encoder)
    dropped = sorted(k for k in stripped if k not in expected and k.startswith(heads))
    out = {k: v for k, v in stripped.items() if k not in dropped}
    if isinstance(model, VisionTransformer):
        out, lost, vit_notes = _vit_filter(model, out)
        return out, sorted(dropped + lost), vit_notes
    notes: dict[str, Any] = {}
    pos = out.get("pos_embed")
    if (
        isinstance(pos, Tensor)
        and "pos_embed" in expected
        and pos.shape != expected["pos_embed"].shape
        and pos.ndim == 3
        and hasattr(model, "patch_embed")
    ):
        prefix = 0 if getattr(model, "no_embed_class", False) else encoder.num_prefix_tokens
        grid = [int(s) for s in model.patch_embed.grid_size]
        try:
            out["pos_embed"] = resample_abs_pos_embed(pos, new_size=grid, num_prefix_tokens=prefix)
            notes["resampled_pos_embed"] = [list(pos.shape), list(out["pos_embed"].shape)]
        except (RuntimeError, ValueError) as err:
            logger.debug("pos_embed resampling failed: %s", err)  # reported as a mismatch
    return out, dropped, notes


def _timm_encoder(arch: str, img_size: int, spec: str, **kwargs: Any) -> TimmEncoder:
    encoder = build_seeded_encoder(arch, img_size, spec, **kwargs)
    if not isinstance(encoder, TimmEncoder):
        raise CheckpointError(
            f"Model spec '{spec}': '{arch}' is not a timm model. Use a timm model name "
            "(timm.list_models()), or 'baseline:...' for baselines."
        )
    return encoder


def _load_weights_file(encoder: TimmEncoder, path: Path, name: str, spec: str) -> dict[str, Any]:
    """Load a timm state-dict file into ``encoder`` (see :func:`adapt_timm_state`); returns notes
    for ``info``."""
    state, _ = load_state_file(path)
    state, dropped, notes = adapt_timm_state(encoder, state)
    check_state_dict(
        encoder.model,
        state,
        source=f"Weights '{path}'",
        target=f"timm {name}",
        remedy=f"They belong to another architecture: name it in 'timm:<name>:{path}'.",
    )
    encoder.model.load_state_dict(state, strict=True)
    encoder.eval()
    if dropped:
        logger.info("%s: dropped %d head keys (%s)", spec, len(dropped), ", ".join(dropped))
    return {"dropped_keys": dropped, **notes}


@scheme(
    "timm",
    forms=("timm:<name>", "timm:<name>.<tag>", "timm:<name>:<weights.pth|.safetensors>"),
    help="a timm architecture: random init (seed 0, recorded as such); with .TAG timm's "
    "pretrained weights (e.g. timm:vit_small_patch16_224.dino) from the local Hugging Face cache "
    "(HF_HUB_CACHE), never downloaded; with :WEIGHTS a local file",
)
def load_timm(spec: str, rest: str, img_size: int) -> LoadedModel:
    """``timm:NAME``, ``timm:NAME.TAG`` and ``timm:NAME:WEIGHTS``."""
    name, _, weights = rest.partition(":")
    if not name:
        raise CheckpointError(f"Model spec '{spec}' names no timm model. Use {accepted_forms()}.")
    model_id = f"timm:{name}"
    tagged = "." in name and not weights
    hub = timm_tag_weights(name, spec) if tagged else None  # before building: fail fast
    encoder = _timm_encoder(name, img_size, spec)
    info: dict[str, Any] = {"source": "timm", "timm_name": name}
    if hub is not None:
        info.update(weights=hub.source, file=str(hub.file), hf_hub_id=hub.repo_id)
        info.update(_load_weights_file(encoder, hub.file, name, spec))
        return LoadedModel(model_id, sha256_file(hub.file), encoder, spec, info)
    if not weights:
        encoder.eval()
        info["weights"] = RANDOM_INIT
        sha = sha256_state_dict(encoder.state_dict(), salt=model_id)
        return LoadedModel(model_id, sha, encoder, spec, info)
    path = Path(weights).expanduser()
    info["weights"] = weights
    info.update(_load_weights_file(encoder, path, name, spec))
    return LoadedModel(model_id, sha256_file(path), encoder, spec, info)


@scheme(
    "hf-hub",
    forms=("hf-hub:<org>/<name>",),
    help="a timm model on the Hugging Face hub (its config.json and weights), from the local "
    "cache only",
)
def load_hf_hub(spec: str, hub_id: str, img_size: int) -> LoadedModel:
    """``hf-hub:ORG/NAME``: the architecture and weights of a timm model in the local cache."""
    if hub_id.count("/") != 1 or not all(hub_id.partition("@")[0].split("/")):
        raise CheckpointError(
            f"Model spec '{spec}' must name a repository as 'hf-hub:<org>/<name>', "
            "e.g. 'hf-hub:timm/vit_small_patch16_224.dino'."
        )
    hub = hf_hub_weights(hub_id, spec)
    # eqbench sets the size and drops the head itself; 3 input channels is every model's default
    options = {
        k: v
        for k, v in hub.model_args.items()
        if k not in ("img_size", "num_classes") and not (k == "in_chans" and v == 3)
    }
    cfg = hub.pretrained_cfg
    norm = {"mean": cfg["mean"], "std": cfg["std"]} if "mean" in cfg and "std" in cfg else None
    encoder = _timm_encoder(hub.arch, img_size, spec, normalization=norm, options=options)
    info: dict[str, Any] = {"source": "hf-hub", "timm_name": hub.arch, "hf_hub_id": hub.repo_id}
    info.update(weights=hub.source, file=str(hub.file), model_args=hub.model_args)
    info.update(_load_weights_file(encoder, hub.file, hub.arch, spec))
    return LoadedModel(f"hf-hub:{hub.repo_id}", sha256_file(hub.file), encoder, spec, info)


@scheme(
    "baseline",
    forms=("baseline:pixels[:<grid>]", "baseline:random:<arch>"),
    help="the raw-pixel baseline, or a randomly initialised backbone (seed 0)",
)
def load_baseline(spec: str, rest: str, img_size: int) -> LoadedModel:
    """``baseline:pixels[:GRID]`` and ``baseline:random:ARCH``."""
    kind, _, arg = rest.partition(":")
    if kind == "pixels":
        try:
            grid = int(arg) if arg else 16
            if grid < 1:
                raise ValueError
        except ValueError:
            raise CheckpointError(
                f"Model spec '{spec}': the pixel grid must be a positive integer, "
                "e.g. 'baseline:pixels:16'."
            ) from None
        encoder: Encoder = PixelEncoder(img_size=img_size, grid=grid)
        model_id = f"baseline:pixels:{grid}" if arg else "baseline:pixels"
        encoder.eval()
        sha = sha256_state_dict({}, salt=f"baseline:pixels:{grid}")
        return LoadedModel(model_id, sha, encoder, spec, {"source": "baseline", "grid": grid})
    if kind == "random" and arg:
        encoder = build_seeded_encoder(arg, img_size, spec)
        encoder.eval()
        model_id = f"baseline:random:{arg}"
        sha = sha256_state_dict(encoder.state_dict(), salt=arg)
        info = {"source": "baseline", "arch": arg, "seed": RANDOM_INIT_SEED, "weights": RANDOM_INIT}
        return LoadedModel(model_id, sha, encoder, spec, info)
    raise CheckpointError(
        f"Unknown baseline spec '{spec}'. Use 'baseline:pixels[:<grid>]' or "
        "'baseline:random:<arch>'."
    )


def load_path(spec: str, img_size: int) -> LoadedModel:
    """A spec with no registered scheme: the path of an eqbench checkpoint (it keeps the size it
    was saved with; ``img_size`` is unused)."""
    del img_size
    path = Path(spec).expanduser()
    scheme_name, sep, _ = spec.partition(":")
    if not path.exists():
        what = f"unknown model scheme '{scheme_name}:'" if sep else "no such file"
        raise CheckpointError(f"Cannot load model '{spec}' ({what}). Use {accepted_forms()}.")
    encoder, info = load_eqbench_checkpoint(path)
    info["path"] = str(path)
    model_id = str(info.get("name") or path.stem)
    return LoadedModel(model_id, sha256_file(path), encoder, spec, info)
