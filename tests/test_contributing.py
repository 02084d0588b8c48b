"""CONTRIBUTING.md's worked examples work as written, each from its own file(s) only.

Each example is read from the code block of CONTRIBUTING.md whose first line names its file, and
used the way a contributor's new file would be: a method or dataset module imported after
eqbench (as a plugin would be), a task file in a copy of ``tasks/``, a config in a copy of
``configs/pretrain/``. Nothing else is edited, and the registries are restored afterwards.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from test_pretrain_methods import build, images

import eqbench
from eqbench.checkpoints import formats
from eqbench.cli import main
from eqbench.data import DATASETS, load_dataset
from eqbench.methods import METHODS, OBJECTIVES, TrainBatch
from eqbench.registry import Registry
from eqbench.results.records import load_results
from eqbench.tasks import tasks_dir
from eqbench.train.config import configs_dir, load_pretrain_config

ROOT = Path(eqbench.__file__).resolve().parent.parent
GUIDE = ROOT / "CONTRIBUTING.md"
SMALL_EVAL = {"n_train": 24, "n_test": 12, "image_size": 32}


def block(path: str) -> str:
    """The code block of CONTRIBUTING.md whose first line is ``# <path>``."""
    pattern = rf"```[a-z]*\n# {re.escape(path)}\n(.*?)```"
    found = re.findall(pattern, GUIDE.read_text(), flags=re.S)
    assert len(found) == 1, f"CONTRIBUTING.md has {len(found)} blocks for {path}"
    return str(found[0])


def import_block(path: str, tmp_path: Path) -> ModuleType:
    """Write the block to a new module (as a contributor's file) and import it."""
    name = f"contributed_{Path(path).stem}"
    file = tmp_path / f"{name}.py"
    file.write_text(block(path))
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo every registration a test makes."""
    registries: list[Registry[Any]] = [METHODS, OBJECTIVES, DATASETS, formats.FORMATS]
    for registry in registries:
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "_descriptions", dict(registry._descriptions))
    yield
    for name in [m for m in sys.modules if m.startswith("contributed_")]:
        del sys.modules[name]


def cli(*args: str) -> str:
    """Run the CLI with a console wide enough that no table cell wraps (the console's width is
    fixed when it is created, so ``COLUMNS`` alone depends on what imported it first)."""
    from eqbench.cli import console

    width = console.width
    console.width = 400
    try:
        out = CliRunner().invoke(main, list(args), env={"COLUMNS": "400"})
    finally:
        console.width = width
    assert out.exit_code == 0, out.output
    return out.output


def assert_trains(name: str) -> None:
    """Two optimiser steps with the registered test options change the backbone."""
    method = build(name)
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    before = method.encoder.model.patch_embed.proj.weight.detach().clone()
    for step in range(2):
        out = method.training_step(TrainBatch(images(), torch.Generator().manual_seed(step)))
        assert torch.isfinite(out["loss"])
        optimizer.zero_grad()
        out["loss"].backward()
        assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
        optimizer.step()
    assert not torch.equal(before, method.encoder.model.patch_embed.proj.weight)


def test_a_method_is_one_module_and_gets_its_tir_variant(
    restore: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "eqbench.methods.tir" in sys.modules  # TIR was imported before the new objective
    assert "align_uniform" not in METHODS and "tir+align_uniform" not in METHODS
    import_block("eqbench/methods/align_uniform.py", tmp_path)

    assert {"align_uniform", "tir+align_uniform"} <= set(METHODS.names())
    assert METHODS.get("tir+align_uniform").test_options == {"projector_dims": [32, 16]}
    for name in ("align_uniform", "tir+align_uniform"):
        assert_trains(name)
    out = build("tir+align_uniform").training_step(TrainBatch(images(), torch.Generator()))
    assert {"align", "uniform", "recon"} <= set(out)  # the objective's parts and TIR's
    assert (
        build("essl", base="align_uniform")
        .training_step(  # a base of the auxiliary methods
            TrainBatch(images(), torch.Generator())
        )["loss"]
        .isfinite()
    )

    configs = tmp_path / "configs"
    shutil.copytree(configs_dir(), configs)
    (configs / "align_uniform_photos_cpu.yaml").write_text(
        block("configs/pretrain/align_uniform_photos_cpu.yaml")
    )
    monkeypatch.setenv("EQBENCH_PRETRAIN_CONFIGS", str(configs))
    cfg = load_pretrain_config("align_uniform_photos_cpu")
    assert cfg.method == "align_uniform"
    build("align_uniform", **cfg.method_options)  # every option is one the method takes

    listing = cli("ls", "methods")
    rows = {line.split("│")[1].strip(): line for line in listing.splitlines() if "│" in line}
    assert "arXiv 2005.10242" in rows["align_uniform"]
    assert "align_uniform_photos_cpu" in rows["align_uniform"]
    assert "arXiv 2503.18753" in rows["tir+align_uniform"]


def test_a_format_is_one_converter(restore: None, tmp_path: Path) -> None:
    import timm

    from eqbench.zoo.load import load_foreign

    namespace = vars(formats)
    exec(block("eqbench/checkpoints/formats.py"), dict(namespace))  # as if added to that file
    assert "prefixed" in formats.format_names()
    assert "prefixed" in cli("ls", "formats")
    assert "prefixed" in cli("submit", "--help")

    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "prefixed.pth"
    torch.save({f"encoder.{k}": v for k, v in reference.state_dict().items()}, path)
    loaded = load_foreign(path, "prefixed", "vit_tiny_patch16_224")
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded.encoder.model.state_dict()[key], value, rtol=0, atol=0)


def test_a_dataset_and_a_task_on_it(
    restore: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_block("eqbench/data/stripes.py", tmp_path)
    train = load_dataset("stripes", "train", n=16)
    batch = train.load(range(4), 32)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.uint8
    assert "seeded horizontal or vertical stripes" in cli("ls", "datasets")

    tasks = tmp_path / "tasks"
    shutil.copytree(tasks_dir(), tasks)
    (tasks / "classification" / "stripes_knn.yaml").write_text(
        block("tasks/classification/stripes_knn.yaml")
    )
    monkeypatch.setenv("EQBENCH_TASKS_DIR", str(tasks))
    assert "classification/stripes_knn" in cli("ls", "tasks")
    results = tmp_path / "results"
    args = ["eval", "--task", "classification/stripes_knn", "--checkpoint", "baseline:pixels"]
    args += ["--no-cache", "--results-dir", str(results)]
    for key, value in SMALL_EVAL.items():
        args += ["--set", f"{key}={value}"]
    cli(*args)
    [record] = load_results(results)
    assert record["task"] == "classification/stripes_knn"
    # raw pixels already tell the two orientations apart better than chance (1/2)
    assert 0.5 < record["metrics"]["top1_k20"]["mean"] <= 1.0


def test_a_protocol_is_one_package_and_a_task_file(
    restore: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nearest-class-mean example registers, is listed, and runs a task file end to end."""
    from eqbench.protocols import PROTOCOLS

    monkeypatch.setattr(PROTOCOLS, "_items", dict(PROTOCOLS._items))
    import_block("eqbench/protocols/centroid/__init__.py", tmp_path)
    assert "centroid" in cli("ls", "protocols")
    tasks = tmp_path / "tasks"
    shutil.copytree(tasks_dir(), tasks)
    (tasks / "classification" / "centroid.yaml").write_text(
        block("tasks/classification/centroid.yaml")
    )
    monkeypatch.setenv("EQBENCH_TASKS_DIR", str(tasks))
    assert "classification/centroid" in cli("ls", "tasks")
    results = tmp_path / "results"
    args = ["eval", "--task", "classification/centroid", "--checkpoint", "baseline:pixels"]
    args += ["--no-cache", "--results-dir", str(results), "--set", "n_train=200"]
    cli(*args, "--set", "n_test=100")
    [record] = load_results(results)
    # ten classes (chance 0.1); class means of raw pixels already separate most digits
    assert 0.5 < record["metrics"]["top1"]["mean"] <= 1.0
