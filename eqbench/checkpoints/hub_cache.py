"""Pretrained weights by name (``timm:NAME.TAG``, ``hf-hub:ORG/NAME``) from the local Hugging Face
cache only.

The file is the one ``timm.create_model(..., pretrained=True)`` would load
(``timm/models/_builder.py``, ``_resolve_pretrained_source`` and ``load_pretrained``): for a tagged
timm name, the ``hf_hub_id`` of the tag's pretrained config, file ``hf_hub_filename`` or
``pytorch_model.bin``, with the ``.safetensors`` alternative preferred (``_get_safe_alternatives``);
for ``hf-hub:ORG/NAME``, the repository's ``config.json`` (architecture, ``model_args``,
pretrained config, parsed by timm's own ``load_model_config_from_path``) and then the same files.

Nothing is ever downloaded: files are looked up with ``huggingface_hub.try_to_load_from_cache``
in ``HF_HUB_CACHE`` (read when a model is loaded, so setting it for one run works; default
huggingface_hub's, ``~/.cache/huggingface/hub``). A missing file is a
:class:`~eqbench.errors.CheckpointError` naming the file and the command that fetches it on a
machine with network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
from huggingface_hub import constants, try_to_load_from_cache
from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives, load_model_config_from_path

from eqbench.errors import CheckpointError


@dataclass
class HubWeights:
    """A weights file found in the local Hugging Face cache.

    Attributes:
        repo_id: the Hugging Face repository (``timm/vit_small_patch16_224.dino``).
        file: the cached file (``.../snapshots/<revision>/model.safetensors``).
        revision: the snapshot (commit hash) the file belongs to.
        arch: the timm architecture to build (``vit_small_patch16_224.dino``: with its tag, so the
            model carries the tag's pretrained config).
        model_args: architecture arguments from the repository's ``config.json`` (hf-hub only).
        pretrained_cfg: the pretrained config (normalisation, classifier name, ...).
    """

    repo_id: str
    file: Path
    revision: str
    arch: str
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """``hf-hub:REPO/FILE@REVISION``: which file exactly (the sha256 identifies its bytes)."""
        return f"hf-hub:{self.repo_id}/{self.file.name}@{self.revision}"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE`` when set, else huggingface_hub's default."""
    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def _weight_files(filename: str | None) -> list[str]:
    """The files timm tries, in its order (``load_state_dict_from_hf``)."""
    name = filename or HF_WEIGHTS_NAME
    if name.endswith(".safetensors"):
        return [name]
    return [*_get_safe_alternatives(name), name]


def cached_file(hub_id: str, filenames: list[str], spec: str) -> tuple[Path, str]:
    """The first of ``filenames`` of repository ``hub_id`` (``ORG/NAME[@REVISION]``) in the cache.

    Returns:
        ``(path, revision)``.

    Raises:
        CheckpointError: none is cached; names the file and how to put it there.
    """
    repo_id, _, revision = hub_id.partition("@")
    cache = hub_cache_dir()
    for name in filenames:
        found = try_to_load_from_cache(
            repo_id, name, cache_dir=str(cache), revision=revision or None
        )
        if isinstance(found, str):
            path = Path(found)
            return path, path.parent.name
    raise CheckpointError(
        f"Model spec '{spec}': '{filenames[0]}' of Hugging Face repository '{repo_id}' is not in "
        f"the local cache ({cache}), and eqbench never downloads. On a machine with network run "
        f"`huggingface-cli download {repo_id}`, then copy its cache folder "
        f"'models--{repo_id.replace('/', '--')}' into {cache} (or set HF_HUB_CACHE to the "
        "folder holding it)."
    )


def timm_tag_weights(name: str, spec: str) -> HubWeights:
    """The cached weights timm loads for ``NAME.TAG`` (``vit_small_patch16_224.dino``).

    Raises:
        CheckpointError: unknown tag, weights timm does not keep on the hub, or not cached.
    """
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:
        cfg = None
    if cfg is None:
        arch = name.partition(".")[0]
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
        hint = f" Its tags: {', '.join(tags)}." if tags else " timm has no weights for it."
        raise CheckpointError(
            f"Model spec '{spec}': timm has no pretrained tag '{name}'.{hint} Use "
            "'timm:<name>.<tag>' with a tag from timm.list_pretrained()."
        )
    if not cfg.hf_hub_id or cfg.custom_load == "hf":
        raise CheckpointError(
            f"Model spec '{spec}': timm loads these weights from {cfg.url or 'a custom loader'}, "
            "not from a Hugging Face file eqbench can read offline. Convert them with timm on a "
            f"machine with network and pass 'timm:{cfg.architecture}:<weights.safetensors>'."
        )
    path, revision = cached_file(cfg.hf_hub_id, _weight_files(cfg.hf_hub_filename), spec)
    return HubWeights(cfg.hf_hub_id, path, revision, name, pretrained_cfg=cfg.to_dict())


def hf_hub_weights(hub_id: str, spec: str) -> HubWeights:
    """The cached weights and architecture of a timm model on the Hugging Face hub.

    Raises:
        CheckpointError: ``config.json`` or the weights are not cached, or the config is not
            timm's.
    """
    config, _ = cached_file(hub_id, ["config.json"], spec)
    try:
        pretrained_cfg, arch, model_args = load_model_config_from_path(config.parent)
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"Model spec '{spec}': '{config}' is not a timm model config ({err!r}). "
            "hf-hub: names timm models (their config.json has 'architecture')."
        ) from None
    if pretrained_cfg.get("custom_load") == "hf":
        raise CheckpointError(
            f"Model spec '{spec}': timm loads this repository with a custom loader, which "
            "eqbench does not support. Convert the weights and pass 'timm:<name>:<file>'."
        )
    files = _weight_files(pretrained_cfg.get("hf_hub_filename"))
    path, revision = cached_file(hub_id, files, spec)
    return HubWeights(hub_id, path, revision, arch, dict(model_args), dict(pretrained_cfg))
