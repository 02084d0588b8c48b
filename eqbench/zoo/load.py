"""Load a checkpoint of any supported format into an eqbench backbone, strictly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from eqbench.backbones import Encoder, TimmEncoder
from eqbench.checkpoints.eqbench_format import check_state_dict, load_eqbench_checkpoint
from eqbench.checkpoints.formats import FORMATS, NORMALIZATION, detect_format
from eqbench.checkpoints.safe_load import load_state_file
from eqbench.checkpoints.schemes import scheme
from eqbench.checkpoints.spec import (
    LoadedModel,
    adapt_timm_state,
    build_seeded_encoder,
    sha256_file,
)
from eqbench.errors import CheckpointError
from eqbench.zoo.cards import read_card, weights_path


@dataclass
class Foreign:
    """A third-party checkpoint loaded into an eqbench encoder.

    Attributes:
        encoder: the backbone, weights loaded, eval mode.
        format: the format it was read as.
        arch: the backbone name.
        dropped: keys of the file deliberately not loaded (heads, decoders, other branch).
        notes: format facts (branch, renamed keys, resampled ``pos_embed``).
        preprocessing: ``{"mean", "std", "source"}`` the encoder normalises with, and where
            they come from (the user, the format's project, or the architecture's timm default).
    """

    encoder: Encoder
    format: str
    arch: str
    dropped: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)


def _normalization(
    fmt: str, arch: str, given: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, str]:
    """The ``{"mean", "std"}`` to build ``arch`` with (``None``: its timm default) and their
    source: ``given`` (the user or a card), else the format's project (:data:`NORMALIZATION`)."""
    if given and given.get("mean") is not None and given.get("std") is not None:
        chosen = {"mean": list(given["mean"]), "std": list(given["std"])}
        return chosen, str(given.get("source") or "given")
    known = NORMALIZATION.get(fmt)
    if known is not None:
        return {"mean": list(known.mean), "std": list(known.std)}, known.source
    return None, f"timm pretrained_cfg of {arch}"


def _preprocessing(encoder: Encoder, source: str) -> dict[str, Any]:
    mean: Tensor = encoder.mean  # type: ignore[assignment]
    std: Tensor = encoder.std  # type: ignore[assignment]
    return {
        "mean": [round(float(v), 6) for v in mean.flatten()],
        "std": [round(float(v), 6) for v in std.flatten()],
        "source": source,
    }


def load_foreign(
    path: Path,
    fmt: str,
    arch: str | None,
    img_size: int = 224,
    normalization: Mapping[str, Any] | None = None,
) -> Foreign:
    """Read ``path`` as ``fmt`` (``auto`` detects it) into backbone ``arch``.

    Args:
        normalization: ``{"mean", "std"[, "source"]}`` overriding the format's (user or card).

    Raises:
        CheckpointError: unreadable or code-carrying file, unknown format, no ``arch`` for a
            foreign format, or weights that do not fit the architecture (any key other than
            the format's heads/decoders/other branch missing, unexpected or mis-shaped).
    """
    obj, metadata = load_state_file(path)
    if fmt == "auto":
        fmt = detect_format(obj, metadata)
    if fmt == "eqbench":
        encoder, info = load_eqbench_checkpoint(path)
        name = str(info["backbone"]["name"])
        if arch is not None and arch != name:
            raise CheckpointError(
                f"'{path}' is an eqbench checkpoint of '{name}', not '{arch}'. "
                "Drop --arch or fix it."
            )
        prep = _preprocessing(encoder, "the eqbench checkpoint")
        return Foreign(encoder, "eqbench", name, [], {"method": info.get("method")}, prep)
    converter = FORMATS.get(fmt)
    if arch is None:
        raise CheckpointError(
            f"A {fmt} checkpoint does not say its architecture: pass --arch (a timm name such as "
            "vit_small_patch16_224; `eqbench ls backbones`)."
        )
    converted = converter(obj)
    norm, source = _normalization(fmt, arch, normalization)
    encoder = build_seeded_encoder(arch, img_size, f"{fmt}:{path}", normalization=norm)
    if not isinstance(encoder, TimmEncoder):
        raise CheckpointError(f"--arch '{arch}' is not a timm architecture; pick a timm name.")
    state, head_dropped, notes = adapt_timm_state(encoder, converted.state)
    check_state_dict(
        encoder.model,
        state,
        source=f"The {fmt} checkpoint '{path}'",
        target=arch,
        remedy="Check --arch (depth, width, patch size, registers) and --format.",
    )
    encoder.model.load_state_dict(state, strict=True)
    encoder.eval()
    dropped = sorted(converted.dropped + head_dropped)
    notes = {**converted.notes, **notes}
    return Foreign(encoder, fmt, arch, dropped, notes, _preprocessing(encoder, source))


@scheme(
    "zoo",
    forms=("zoo:<id>",),
    help="a model-zoo card (model_zoo/<id>.yaml): its weights, checked against the card's sha256",
)
def load_zoo(spec: str, card_id: str, img_size: int) -> LoadedModel:
    """``zoo:<id>``: the card's weights, after checking their sha256 against the card."""
    card = read_card(card_id)
    path = weights_path(card)
    if not path.is_file():
        raise CheckpointError(
            f"Zoo card '{card_id}' points to '{path}', which does not exist. Put the file there "
            "or fix the card's 'weights' (then run `eqbench zoo verify`)."
        )
    sha = sha256_file(path)
    if sha != card.sha256:
        raise CheckpointError(
            f"'{path}' does not match zoo card '{card_id}' (sha256 {sha[:12]}... vs "
            f"{card.sha256[:12]}... on the card): the file changed since it was submitted. "
            "Restore the original file or re-submit it."
        )
    arch = None if card.format == "eqbench" else card.arch
    given = {"source": f"zoo card {card_id}", **card.preprocessing}
    foreign = load_foreign(path, card.format, arch, img_size, given)
    info = {"source": "zoo", "card": card_id, "format": card.format, "arch": card.arch}
    return LoadedModel(f"zoo:{card_id}", sha, foreign.encoder, spec, info)
