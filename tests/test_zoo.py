"""``eqbench submit`` and the model zoo: every format's real key layout loads into the backbone
with features equal to a timm model holding the same weights; bad checkpoints write nothing."""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from click.testing import CliRunner
from torch import Tensor

from eqbench.backbones import create_encoder
from eqbench.checkpoints import save_checkpoint
from eqbench.cli import main
from eqbench.errors import CheckpointError, ConfigError
from eqbench.models import load_model
from eqbench.zoo.cards import card_ids, read_card
from eqbench.zoo.submit import submit, verify

VIT = "vit_tiny_patch16_224"


pytestmark = pytest.mark.usefixtures("zoo_dir")


def oracle(arch: str, seed: int = 1, **kwargs: Any) -> torch.nn.Module:
    """A timm model with random (seeded) weights: the reference features."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    with torch.no_grad():  # make every tensor distinctive (timm inits some to constants)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


def sd(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def head(n: int = 2) -> dict[str, Tensor]:
    return {f"head.mlp.{i}.weight": torch.randn(8, 8) for i in range(n)}


def namespace() -> argparse.Namespace:
    return argparse.Namespace(arch="vit_tiny", lr=5e-4, epochs=100)


# --- each format as written by its own code ----------------------------------------------------


def dino_training(s: dict[str, Tensor]) -> dict[str, Any]:
    student = {f"module.backbone.{k}": v + 1 for k, v in s.items()}  # DDP-wrapped student
    student.update({f"module.{k}": v for k, v in head().items()})
    teacher = {f"backbone.{k}": v for k, v in s.items()} | head()
    return {"student": student, "teacher": teacher, "epoch": 3, "args": namespace()}


def ibot_training(s: dict[str, Tensor]) -> dict[str, Any]:
    obj = dino_training(s)
    obj["teacher"]["backbone.masked_embed"] = torch.zeros(1, s["cls_token"].shape[-1])
    obj["student"]["module.backbone.masked_embed"] = torch.zeros(1, s["cls_token"].shape[-1])
    return obj


def mae_training(s: dict[str, Tensor]) -> dict[str, Any]:
    model = dict(s) | {
        "mask_token": torch.zeros(1, 1, 8),
        "decoder_embed.weight": torch.randn(8, 192),
        "decoder_blocks.0.norm1.weight": torch.ones(8),
        "decoder_pred.weight": torch.randn(768, 8),
    }
    return {"model": model, "optimizer": {}, "epoch": 1, "args": namespace()}


def gtsa_training(s: dict[str, Tensor]) -> dict[str, Any]:
    model = {f"base_encoder.{k}": v - 1 for k, v in s.items()}
    model |= {f"momentum_encoder.{k}": v for k, v in s.items()}
    model |= {
        "base_projector.proj.weight": torch.randn(4, 4),
        "rot_predictor.0.weight": torch.ones(2),
    }
    return {"model": model, "epoch": 2, "args": namespace()}


def solo_learn(s: dict[str, Tensor]) -> dict[str, Any]:
    state = {f"backbone.{k}": v for k, v in s.items()}
    state |= {f"momentum_backbone.{k}": v * 0 for k, v in s.items()}
    state |= {"projector.0.weight": torch.randn(4, 4), "classifier.weight": torch.randn(10, 192)}
    return {
        "state_dict": state,
        "pytorch-lightning_version": "2.1.3",
        "hyper_parameters": {"cfg": {"method": "byol", "optimizer": {"lr": 1.0}}},
        "epoch": 1,
        "global_step": 10,
    }


def lightly_vit(s: dict[str, Tensor]) -> dict[str, Any]:
    state = {f"backbone.vit.{k}": v for k, v in s.items()}
    state |= {"projection_head.layers.0.weight": torch.randn(4, 4)}
    return {"state_dict": state, "pytorch-lightning_version": "2.1.3", "hyper_parameters": {}}


def timm_file(s: dict[str, Tensor]) -> dict[str, Any]:
    """``timm.create_model(arch).state_dict()``: timm's models keep their classifier."""
    width = s["cls_token"].shape[-1]
    return dict(s) | {"head.weight": torch.randn(1000, width), "head.bias": torch.zeros(1000)}


CASES: dict[str, tuple[str, Callable[[dict[str, Tensor]], dict[str, Any]], int]] = {
    # format: (arch, wrap, number of keys that must be reported as dropped)
    "timm": (VIT, timm_file, -1),
    "dino": (VIT, dino_training, -1),
    "ibot": (VIT, ibot_training, -1),
    "mae": (VIT, mae_training, 4),
    "gtsa": (VIT, gtsa_training, -1),
    "solo-learn": (VIT, solo_learn, -1),
    "lightly": (VIT, lightly_vit, 1),
}


def features_equal(card_id: str, reference: torch.nn.Module, size: int = 224) -> None:
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    loaded = load_model(f"zoo:{card_id}", img_size=size)
    assert loaded.model_id == f"zoo:{card_id}"
    with torch.no_grad():
        got = loaded.encoder.model.forward_features(x)
        want = reference.forward_features(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", sorted(CASES))
@pytest.mark.parametrize("detect", [False, True], ids=["explicit", "auto"])
def test_each_format_loads_to_the_same_features(
    fmt: str, detect: bool, tmp_path: Path, zoo_dir: Path
) -> None:
    arch, wrap, n_dropped = CASES[fmt]
    reference = oracle(arch)
    path = tmp_path / f"{fmt}.pth"
    torch.save(wrap(sd(reference)), path)
    if detect and fmt == "solo-learn":  # same 'backbone.*' layout as a lightly timm backbone
        with pytest.raises(CheckpointError, match="--format solo-learn or --format lightly"):
            submit(path, card_id="ambiguous", arch=arch)
        assert card_ids() == []
        return
    done = submit(path, card_id=f"m-{fmt}", fmt="auto" if detect else fmt, arch=arch)
    card = read_card(f"m-{fmt}")
    assert card.format == fmt and card.arch == arch and len(card.sha256) == 64
    if n_dropped >= 0:
        assert len(card.dropped_keys) == n_dropped
    else:
        assert card.dropped_keys  # heads / the other branch are reported
    assert not any(k.startswith(("blocks.", "patch_embed", "cls_token")) for k in card.dropped_keys)
    assert done.path == zoo_dir / f"m-{fmt}.yaml"
    features_equal(f"m-{fmt}", reference)


def test_lightly_resnet_sequential_trunk(tmp_path: Path) -> None:
    reference = oracle("resnet18")
    children = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    state = {}
    for key, value in sd(reference).items():
        first, _, rest = key.partition(".")
        state[f"backbone.{children.index(first)}.{rest}"] = value
    path = tmp_path / "lightly_resnet.ckpt"
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.0.0"}, path)
    submit(path, card_id="lightly-r18", fmt="auto", arch="resnet18")
    assert read_card("lightly-r18").format == "lightly"
    features_equal("lightly-r18", reference, size=64)


def test_eqbench_checkpoint_needs_no_arch(tmp_path: Path) -> None:
    encoder = create_encoder("micro_vit", img_size=32)
    path = tmp_path / "own.pt"
    save_checkpoint(path, encoder, method="vicreg", config={})
    submit(path, card_id="own")
    card = read_card("own")
    assert card.format == "eqbench" and card.arch == "micro_vit"
    loaded = load_model("zoo:own", img_size=32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(x).patch, encoder.eval()(x).patch)


class Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.write_bytes(b"\x80\x04not a checkpoint"), "truncated or corrupt"),
        (
            lambda p: torch.save(dict(sd(oracle(VIT))), p) or p.write_bytes(p.read_bytes()[:5000]),
            "truncated or corrupt",
        ),
        (lambda p: torch.save({"model": Evil()}, p), "need code to load|needs code"),
        (lambda p: p.write_bytes(pickle.dumps({"x": Evil()})), "need code to load|needs code"),
        (lambda p: torch.save(sd(oracle("resnet18")), p), "does not match the architecture"),
    ],
    ids=["garbage", "truncated", "code-torch", "code-pickle", "wrong-arch"],
)
def test_bad_checkpoints_are_refused_and_nothing_is_written(
    make: Callable[[Path], Any], match: str, tmp_path: Path, zoo_dir: Path
) -> None:
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(CheckpointError, match=match):
        submit(path, card_id="bad", fmt="timm", arch=VIT)
    assert card_ids() == [] and not any(zoo_dir.iterdir())


def test_card_ids_and_existing_cards(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(sd(oracle(VIT)), path)
    with pytest.raises(ConfigError, match="not allowed"):
        submit(path, card_id="../escape", arch=VIT)
    with pytest.raises(CheckpointError, match="pass --arch"):
        submit(path, card_id="x", fmt="timm")
    submit(path, card_id="x", arch=VIT)
    with pytest.raises(CheckpointError, match="already exists"):
        submit(path, card_id="x", arch=VIT)
    submit(path, card_id="x", arch=VIT, overwrite=True)


def test_verify_and_tampering(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(sd(oracle(VIT)), path)
    submit(path, card_id="good", arch=VIT)
    assert [v.ok for v in verify()] == [True]
    torch.save(sd(oracle(VIT, seed=2)), path)  # the file changes under the card
    [verdict] = verify()
    assert not verdict.ok and "sha256" in verdict.problem
    with pytest.raises(CheckpointError, match="does not match zoo card"):
        load_model("zoo:good", img_size=224)
    with pytest.raises(CheckpointError, match=r"No model-zoo card 'goo'.*good"):
        load_model("zoo:goo", img_size=224)


def test_cli_submit_runs_the_suite_and_zoo_commands(tmp_path: Path) -> None:
    encoder = create_encoder("micro_vit", img_size=32)
    path = tmp_path / "own.pt"
    save_checkpoint(path, encoder, method="vicreg", config={})
    results = tmp_path / "results"
    runner = CliRunner()
    args = ["submit", str(path), "--id", "micro", "--suite", "classification/knn"]
    args += ["--results-dir", str(results), "--set", "image_size=32", "--set", "n_train=200"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "1 results" in result.output
    board = runner.invoke(main, ["leaderboard", "--results-dir", str(results), "--format", "csv"])
    assert "zoo:micro" in board.output
    assert "micro" in runner.invoke(main, ["zoo", "ls"]).output
    assert "sha256:" in runner.invoke(main, ["zoo", "show", "micro"]).output
    ok = runner.invoke(main, ["zoo", "verify"])
    assert ok.exit_code == 0 and "micro: ok" in ok.output
    path.write_bytes(path.read_bytes()[:-10])
    bad = runner.invoke(main, ["zoo", "verify"])
    assert bad.exit_code == 1 and "FAILED" in bad.output


def test_an_installed_eqbench_refuses_to_write_cards_into_site_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --zoo or $EQBENCH_ZOO_DIR an installed wheel's zoo is the packaged copy: submit
    refuses before loading anything, and writes nothing there."""
    import eqbench.resources
    import eqbench.zoo.cards

    packaged = tmp_path / "site-packages" / "eqbench" / "_shipped" / "model_zoo"
    packaged.mkdir(parents=True)
    monkeypatch.delenv("EQBENCH_ZOO_DIR", raising=False)
    monkeypatch.setattr(eqbench.resources, "packaged_dir", lambda name: packaged.parent / name)
    monkeypatch.setattr(eqbench.zoo.cards, "packaged_dir", lambda name: packaged.parent / name)
    path = tmp_path / "w.pth"
    torch.save(sd(oracle(VIT)), path)
    with pytest.raises(ConfigError, match="EQBENCH_ZOO_DIR=DIR"):
        submit(path, card_id="x", arch=VIT)
    assert not any(packaged.iterdir())
    own = tmp_path / "mine"
    own.mkdir()
    submit(path, card_id="x", arch=VIT, zoo=own)  # an explicit folder is fine
    assert (own / "x.yaml").is_file() and not any(packaged.iterdir())
