"""Checkpoints: round trips, hashes, refused files and model specs."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors import safe_open
from timm.layers import resample_abs_pos_embed

from eqbench.backbones import Encoder, create_encoder
from eqbench.checkpoints import (
    LoadedModel,
    load_state_file,
    save_checkpoint,
    sha256_file,
    sha256_state_dict,
)
from eqbench.errors import CheckpointError
from eqbench.models import load_model

CONFIG = {"epochs": 2, "lr": 0.001, "transforms": ["rotation", "crop"]}


class _Custom:
    """A class a checkpoint may not contain: unpickling it needs this module's code."""

    def __init__(self) -> None:
        self.value = 3


class _SystemCall:
    """Pickles as ``os.system(command)``: loading it with plain pickle would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


@pytest.fixture
def micro() -> Encoder:
    torch.manual_seed(0)
    return create_encoder("micro_vit", img_size=32, patch_size=8).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _features(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        feats = encoder(x)
    assert feats.cls is not None
    return torch.cat([feats.cls[:, None], feats.patch], dim=1)


# ---------------------------------------------------------------- eqbench checkpoint round trips


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_gives_identical_features(
    tmp_path: Path, micro: Encoder, images: torch.Tensor, suffix: str
) -> None:
    path = tmp_path / f"run{suffix}"
    save_checkpoint(path, micro, method="tir", config=CONFIG)
    loaded = load_model(str(path), img_size=32)
    assert isinstance(loaded, LoadedModel)
    assert torch.equal(_features(loaded.encoder, images), _features(micro, images))
    assert not loaded.encoder.training
    assert loaded.model_id == "run"
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.info["method"] == "tir"
    assert loaded.info["config"] == CONFIG
    assert loaded.info["format_version"] == 1
    assert loaded.info["backbone"] == json.loads(json.dumps(micro.describe()))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_safetensors_header_is_metadata(tmp_path: Path, micro: Encoder) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, micro, method="random", config={}, name="my-model")
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["eqbench"])
        keys = set(fh.keys())
    assert header["backbone"]["name"] == "micro_vit"
    assert header["method"] == "random" and header["name"] == "my-model"
    assert keys == set(micro.state_dict())
    state, metadata = load_state_file(path)
    assert json.loads(metadata["eqbench"]) == header
    assert torch.equal(state["model.pos_embed"], micro.state_dict()["model.pos_embed"])
    assert load_model(str(path), img_size=32).model_id == "my-model"


def test_extra_state_round_trips_and_needs_a_torch_file(tmp_path: Path, micro: Encoder) -> None:
    extra = {"step": 7, "optimizer": {"lr": torch.tensor(0.5)}}
    save_checkpoint(tmp_path / "a.pt", micro, method="tir", config={}, extra_state=extra)
    info = load_model(str(tmp_path / "a.pt"), img_size=32).info
    assert info["extra_state"]["step"] == 7
    assert torch.equal(info["extra_state"]["optimizer"]["lr"], torch.tensor(0.5))
    with pytest.raises(CheckpointError, match=r"Use a \.pt path"):
        save_checkpoint(tmp_path / "b.safetensors", micro, method="x", config={}, extra_state=extra)
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "c.pt", micro, method="x", config={}, extra_state={"eqbench": 1})
    with pytest.raises(CheckpointError, match="plain JSON"):
        save_checkpoint(tmp_path / "d.pt", micro, method="x", config={"p": Path("x")})
    assert not (tmp_path / "b.safetensors").exists() and not (tmp_path / "d.pt").exists()


def test_checkpoint_evaluated_at_another_size(tmp_path: Path, micro: Encoder) -> None:
    save_checkpoint(tmp_path / "m.pt", micro, method="tir", config={})
    enc = load_model(str(tmp_path / "m.pt"), img_size=64).encoder
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, 64, 64))
    assert feats.grid == (8, 8) and feats.patch.shape == (1, 64, 64)


def test_sha256_helpers(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    a = {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(2)}
    b = {"b": torch.zeros(2), "w": torch.arange(6.0).view(2, 3)}
    assert sha256_state_dict(a) == sha256_state_dict(b)  # key order does not matter
    assert sha256_state_dict(a) != sha256_state_dict(a, salt="arch")
    c = {"w": torch.arange(6.0).view(3, 2), "b": torch.zeros(2)}  # same bytes, other shape
    assert sha256_state_dict(a) != sha256_state_dict(c)
    d = {"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([0.0, 1e-7])}
    assert sha256_state_dict(a) != sha256_state_dict(d)


# ------------------------------------------------------------------------- refused files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_file(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=r"no such file.*timm:<name>"):
        load_model(str(tmp_path / "nope.pt"), img_size=32)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path: Path, micro: Encoder, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    save_checkpoint(full, micro, method="tir", config={})
    data = full.read_bytes()
    half = tmp_path / f"half{suffix}"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"is truncated or corrupt \(.+\)\. Re-download") as e:
        load_model(str(half), img_size=32)
    assert "half" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors"])
def test_garbage_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        load_state_file(path)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        load_state_file(empty)


def test_pickle_with_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "custom.pt"
    torch.save({"weights": torch.zeros(2), "obj": _Custom()}, path)
    with pytest.raises(CheckpointError) as e:
        load_state_file(path)
    message = str(e.value)
    assert "contains Python objects that need code to load" in message
    assert f"{__name__}._Custom" in message  # the global torch named
    assert "weights_only=True" in message and "Re-save it as a state dict" in message
    assert "\n" not in message


def test_reduce_payload_never_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pth"
    torch.save({"w": _SystemCall(f"touch {shlex.quote(str(sentinel))}")}, path)
    with pytest.raises(CheckpointError, match=r"need code to load \((posix|nt|os)\.system\)"):
        load_model(f"timm:vit_tiny_patch16_224:{path}", img_size=32)
    assert not sentinel.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_payload_is_named_and_never_runs(tmp_path: Path, protocol: int) -> None:
    """Protocol 4+ pickles stop torch's safe loader at FRAME, before it names the global."""
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pt"
    payload = {"w": torch.zeros(2), "x": _SystemCall(f"touch {shlex.quote(str(sentinel))}")}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(CheckpointError, match=r"need code to load \(.*\b(posix|nt|os)\.system\)"):
        load_state_file(path)
    assert not sentinel.exists()


def test_plain_pickle_of_plain_data_is_reported_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    with pytest.raises(CheckpointError, match=r"not written by torch\.save"):
        load_state_file(path)


def test_legacy_pickle_payload_never_runs(tmp_path: Path) -> None:
    from fixtures import make_malicious_pickle

    sentinel = tmp_path / "SENTINEL"
    path = make_malicious_pickle(tmp_path / "evil.pt", sentinel)
    with pytest.raises(CheckpointError, match="need code to load"):
        load_state_file(path)
    assert not sentinel.exists()


def test_not_an_eqbench_checkpoint(tmp_path: Path, micro: Encoder) -> None:
    torch.save(micro.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"not an eqbench checkpoint.*timm:<model-name>"):
        load_model(str(tmp_path / "plain.pt"), img_size=32)


def _tamper_backbone(path: Path, **changes: Any) -> None:
    payload = torch.load(path, weights_only=True)
    payload["eqbench"]["backbone"]["kwargs"].update(changes)
    torch.save(payload, path)


def test_mismatched_architecture(tmp_path: Path, micro: Encoder) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, micro, method="tir", config={})
    _tamper_backbone(path, depth=3)
    with pytest.raises(CheckpointError) as e:
        load_model(str(path), img_size=32)
    message = str(e.value)
    assert "does not match the architecture micro_vit" in message
    assert "missing keys: model.blocks.2." in message
    assert "different architecture" in message

    save_checkpoint(path, micro, method="tir", config={})
    _tamper_backbone(path, embed_dim=96)
    pattern = r"shape mismatches \(checkpoint vs model\): model.blocks.0.attn.proj.bias \(64,\) vs"
    with pytest.raises(CheckpointError, match=pattern):
        load_model(str(path), img_size=32)


def test_unknown_backbone_in_checkpoint(tmp_path: Path, micro: Encoder) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, micro, method="tir", config={})
    payload = torch.load(path, weights_only=True)
    payload["eqbench"]["backbone"]["name"] = "micro_vitt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="Did you mean 'micro_vit'"):
        load_model(str(path), img_size=32)


# ---------------------------------------------------------------------------- model specs


def _tiny_timm(img_size: int, **kwargs: Any) -> Any:
    torch.manual_seed(3)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=img_size, **kwargs
    ).eval()


def test_timm_weights_with_module_prefix_and_head(tmp_path: Path) -> None:
    source = _tiny_timm(32)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = load_model(f"timm:vit_tiny_patch16_224:{path}", img_size=32)
    assert loaded.model_id == "timm:vit_tiny_patch16_224"
    assert loaded.info["dropped_keys"] == ["head.bias", "head.weight"]
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        tokens = source.forward_features((x - 0.5) / 0.5)  # this model's cfg: mean = std = 0.5
        feats = loaded.encoder(x)
    assert feats.cls is not None
    torch.testing.assert_close(feats.cls, tokens[:, 0])
    torch.testing.assert_close(feats.patch, tokens[:, 1:])


def test_timm_safetensors_weights_with_resampled_pos_embed(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = _tiny_timm(64)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = load_model(f"timm:vit_tiny_patch16_224:{path}", img_size=32)
    assert loaded.info["resampled_pos_embed"] == [[1, 17, 192], [1, 5, 192]]
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=[2, 2])
    torch.testing.assert_close(loaded.encoder.state_dict()["model.pos_embed"], expected)
    torch.testing.assert_close(
        loaded.encoder.state_dict()["model.blocks.0.attn.qkv.weight"],
        source.state_dict()["blocks.0.attn.qkv.weight"],
    )


def test_timm_weights_of_another_architecture(tmp_path: Path) -> None:
    source = _tiny_timm(32, depth=2, embed_dim=64, num_heads=2)
    path = tmp_path / "small.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_model(f"timm:vit_tiny_patch16_224:{path}", img_size=32)
    message = str(e.value)
    assert "does not match the architecture timm vit_tiny_patch16_224" in message
    assert "missing keys: blocks.10." in message and "shape mismatches" in message


def test_timm_random_init_is_seeded() -> None:
    a = load_model("timm:vit_tiny_patch16_224", img_size=32)
    b = load_model("timm:vit_tiny_patch16_224", img_size=32)
    assert a.model_id == "timm:vit_tiny_patch16_224" and a.sha256 == b.sha256
    assert a.info["weights"] == "random init (seed 0)"
    with pytest.raises(CheckpointError, match="not a timm model"):
        load_model("timm:pixels", img_size=32)
    with pytest.raises(CheckpointError, match="Did you mean"):
        load_model("timm:vit_tiny_patch16_22", img_size=32)


def test_random_baseline_is_deterministic() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("baseline:random:micro_vit", img_size=32)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is left alone
    b = load_model("baseline:random:micro_vit", img_size=32)
    assert a.model_id == "baseline:random:micro_vit"
    assert a.sha256 == b.sha256 == sha256_state_dict(a.encoder.state_dict(), salt="micro_vit")
    for key, value in a.encoder.state_dict().items():
        assert torch.equal(value, b.encoder.state_dict()[key])
    other = load_model("baseline:random:resnet18", img_size=32)
    assert other.sha256 != a.sha256
    torch.manual_seed(5)  # a differently initialised micro_vit hashes differently
    assert sha256_state_dict(create_encoder("micro_vit", img_size=32).state_dict()) != a.sha256


def test_pixel_baseline_specs() -> None:
    default = load_model("baseline:pixels", img_size=64)
    assert default.model_id == "baseline:pixels"
    assert default.encoder(torch.rand(1, 3, 64, 64)).grid == (16, 16)
    eight = load_model("baseline:pixels:8", img_size=64)
    assert eight.model_id == "baseline:pixels:8"
    assert eight.encoder(torch.rand(1, 3, 64, 64)).grid == (8, 8)
    assert eight.sha256 != default.sha256
    with pytest.raises(CheckpointError, match="positive integer"):
        load_model("baseline:pixels:big", img_size=64)
    with pytest.raises(CheckpointError, match="Unknown baseline spec"):
        load_model("baseline:noise", img_size=64)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("zoo:tir-vits16", "No model-zoo card"),
        ("hub:facebook/dino", r"unknown model scheme 'hub:'.*baseline:random:<arch>"),
        ("no/such/checkpoint.pt", r"no such file.*'timm:<name>:<weights"),
    ],
)
def test_unusable_specs(spec: str, pattern: str) -> None:
    with pytest.raises(CheckpointError, match=pattern):
        load_model(spec, img_size=32)
