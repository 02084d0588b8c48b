"""Task files: every shipped file is valid; malformed ones fail with a clear message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eqbench.dataclass_dicts import from_dict
from eqbench.errors import ConfigError, EqbenchError
from eqbench.protocols import PROTOCOLS
from eqbench.tasks import all_groups, all_tasks, resolve_tasks, tasks_dir
from eqbench.transforms import TRANSFORMS

EXPECTED = {
    "synthetic/rotation",
    "synthetic/colour",
    "synthetic/blur",
    "synthetic/translation",
    "synthetic/se2",
    "synthetic/scale",
    "synthetic/rotation4",
    "synthetic/flip",
    "classification/knn",
    "classification/linear",
}


def test_shipped_tasks_and_groups() -> None:
    tasks = all_tasks()
    assert set(tasks) >= EXPECTED
    groups = all_groups()
    assert {"synthetic", "core"} <= set(groups)
    synthetic = [t.name for t in resolve_tasks("synthetic")]
    assert len(synthetic) == 8 and all(n.startswith("synthetic/") for n in synthetic)
    core = {t.name for t in resolve_tasks("core")}
    assert core >= EXPECTED
    for name in TRANSFORMS:
        assert f"invariance/{name}" in core


@pytest.mark.parametrize("name", sorted(all_tasks()))
def test_every_task_config_validates(name: str) -> None:
    spec = all_tasks()[name]
    protocol = PROTOCOLS.get(spec.protocol)
    cfg = from_dict(protocol.Config, spec.config, name)
    assert spec.primary_metric in protocol.metrics
    assert spec.version >= 1 and spec.description
    if hasattr(cfg, "transformation"):
        assert cfg.transformation in TRANSFORMS
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert set(spec.config) <= fields


def test_resolve_dedups_and_keeps_order() -> None:
    names = [t.name for t in resolve_tasks("synthetic/flip,synthetic,synthetic/flip")]
    assert names[0] == "synthetic/flip" and names.count("synthetic/flip") == 1


def test_unknown_task_did_you_mean() -> None:
    with pytest.raises(EqbenchError, match=r"Did you mean 'synthetic/rotation'\?"):
        resolve_tasks("synthetic/rotaton")


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


GOOD = "task: a/b\nversion: 1\nprotocol: knn\ndataset: digits\nprimary_metric: top1_k20\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: a/b\nversion: [1\n", "not valid YAML at line"),
        ("- a\n- b\n", "must hold a mapping"),
        (
            GOOD + "primry_metric: x\n",
            r"unknown key 'primry_metric'\. Did you mean 'primary_metric'",
        ),
        ("task: a/b\nversion: 1\n", "missing key"),
        (GOOD.replace("task: a/b", "task: a/c"), "its path says 'a/b'"),
        (GOOD.replace("version: 1", "version: zero"), "version must be a positive integer"),
    ],
)
def test_malformed_task_files(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, "a/b.yaml", text)
    with pytest.raises(ConfigError, match=message):
        all_tasks(tmp_path)


def test_include_merges_config(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "a/_base.yaml",
        "version: 2\nprotocol: knn\ndataset: digits\n"
        "primary_metric: top1_k20\nconfig: {image_size: 32, feature: cls}\n",
    )
    _write(tmp_path, "a/b.yaml", "include: _base.yaml\ntask: a/b\nconfig: {feature: avgpool}\n")
    spec = all_tasks(tmp_path)["a/b"]
    assert spec.version == 2
    assert spec.config == {"image_size": 32, "feature": "avgpool"}


def test_group_with_unknown_member(tmp_path: Path) -> None:
    _write(tmp_path, "a/b.yaml", GOOD)
    _write(tmp_path, "groups/g.yaml", "group: g\ntasks: [a/bb]\n")
    with pytest.raises(ConfigError, match=r"unknown task 'a/bb'\. Did you mean 'a/b'"):
        all_tasks(tmp_path)


def test_tasks_dir_is_the_repository_folder() -> None:
    assert (tasks_dir() / "synthetic" / "rotation.yaml").is_file()
