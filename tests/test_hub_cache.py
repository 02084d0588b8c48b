"""Pretrained weights by name (timm:NAME.TAG, hf-hub:ORG/NAME) from a local Hugging Face cache,
checked against timm's own offline loading of the same cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from click.testing import CliRunner
from timm.models import save_for_hf

from eqbench.checkpoints.spec import sha256_file
from eqbench.cli import main
from eqbench.errors import CheckpointError
from eqbench.models import load_model

TAGGED = "test_vit.r160_in1k"  # a tiny timm model whose tag timm keeps at timm/test_vit.r160_in1k


def build_cache(root: Path, repo_id: str, arch: str, mean: list[float] | None = None) -> Path:
    """A Hugging Face cache holding ``repo_id`` as ``huggingface-cli download`` leaves it:
    ``models--ORG--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main}``, with the
    files timm's ``save_for_hf`` writes (``model.safetensors`` and ``config.json``) for a randomly
    initialised ``arch`` (classifier included, as timm publishes its weights); ``mean`` replaces
    the normalisation mean in ``config.json``.

    Returns:
        the cached ``model.safetensors``.
    """
    torch.manual_seed(1)
    model = timm.create_model(arch, pretrained=False)
    staged = root / "staged" / repo_id
    save_for_hf(model, str(staged), safe_serialization=True)
    if mean is not None:
        config = json.loads((staged / "config.json").read_text())
        config["pretrained_cfg"]["mean"] = mean
        (staged / "config.json").write_text(json.dumps(config))
    repo = root / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in staged.iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        (repo / "blobs" / digest).write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot / "model.safetensors"


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``HF_HUB_CACHE`` pointed at an empty cache, and huggingface_hub offline (for timm's own
    loading, the oracle: its constants were read at import, so they are patched too)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def _same_forward(ours: torch.nn.Module, upstream: torch.nn.Module, size: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = ours.eval()(x), upstream.eval()(x)
    assert a.shape == b.shape and torch.equal(a, b)
    assert a.abs().sum() > 0


@pytest.mark.parametrize("name", [TAGGED, "test_resnet.r160_in1k"])
def test_timm_tag_loads_the_file_timm_loads(offline_hub: Path, name: str) -> None:
    weights = build_cache(offline_hub, f"timm/{name}", name)
    loaded = load_model(f"timm:{name}", img_size=64)
    kwargs = {"img_size": 64, "dynamic_img_size": True} if "vit" in name else {}
    upstream = timm.create_model(name, pretrained=True, num_classes=0, **kwargs)  # offline
    _same_forward(loaded.encoder.model, upstream, 64)
    assert loaded.model_id == f"timm:{name}"
    assert loaded.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    revision = weights.parent.name
    assert loaded.info["weights"] == f"hf-hub:timm/{name}/model.safetensors@{revision}"
    # and they are not the random init timm:NAME (no tag) gives
    random = load_model(f"timm:{name.partition('.')[0]}", img_size=64)
    assert random.info["weights"] == "random init (seed 0)"
    assert random.sha256 != loaded.sha256


def test_hf_hub_repo_loads_config_and_weights_as_timm_does(offline_hub: Path) -> None:
    weights = build_cache(offline_hub, "acme/tiny-vit", TAGGED, mean=[0.25, 0.375, 0.5])
    loaded = load_model("hf-hub:acme/tiny-vit", img_size=64)
    upstream = timm.create_model(
        "hf-hub:acme/tiny-vit", pretrained=True, num_classes=0, img_size=64, dynamic_img_size=True
    )
    _same_forward(loaded.encoder.model, upstream, 64)
    assert loaded.model_id == "hf-hub:acme/tiny-vit"
    assert loaded.sha256 == sha256_file(weights)
    assert loaded.info["timm_name"] == "test_vit"
    assert loaded.encoder.mean.flatten().tolist() == [0.25, 0.375, 0.5]  # config.json's


def test_missing_or_unknown_weights_name_the_remedy(offline_hub: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        load_model(f"timm:{TAGGED}", img_size=64)
    message = str(err.value)
    assert "'model.safetensors'" in message and "not in the local cache" in message
    assert f"huggingface-cli download timm/{TAGGED}" in message
    assert str(offline_hub / "hub") in message
    with pytest.raises(CheckpointError, match="huggingface-cli download acme/nothing"):
        load_model("hf-hub:acme/nothing", img_size=64)
    with pytest.raises(CheckpointError, match=r"no pretrained tag 'test_vit\.dino'.*r160_in1k"):
        load_model("timm:test_vit.dino", img_size=64)
    with pytest.raises(CheckpointError, match="hf-hub:<org>/<name>"):
        load_model("hf-hub:tiny-vit", img_size=64)


def test_cli_with_and_without_the_cache(offline_hub: Path) -> None:
    args = ["eval", "--task", "classification/knn", "--checkpoint", f"timm:{TAGGED}", "--quiet"]
    args += ["--set", "image_size=32", "--no-cache"]
    empty = offline_hub / "empty"
    empty.mkdir()
    results = offline_hub / "results"
    env = {"HF_HUB_CACHE": str(empty)}
    out = CliRunner().invoke(main, [*args, "--results-dir", str(results)], env=env)
    assert out.exit_code != 0, out.output
    lines = [line for line in out.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), out.output
    assert (
        "model.safetensors" in out.output
        and f"huggingface-cli download timm/{TAGGED}" in out.output
    )
    assert not results.exists() or not any(results.rglob("*"))

    weights = build_cache(offline_hub, f"timm/{TAGGED}", TAGGED)
    env = {"HF_HUB_CACHE": os.fspath(offline_hub / "hub")}
    out = CliRunner().invoke(main, [*args, "--results-dir", str(results)], env=env)
    assert out.exit_code == 0, out.output
    [path] = results.rglob("*.json")
    record = json.loads(path.read_text())
    assert record["model_id"] == f"timm:{TAGGED}"
    assert record["checkpoint_sha256"] == sha256_file(weights)
    assert record["weights"] == f"hf-hub:timm/{TAGGED}/model.safetensors@{weights.parent.name}"
