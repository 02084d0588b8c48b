"""A non-editable install ships the tasks, the pretraining configs and the model-zoo folder.

The wheel is built from a copy of the checkout's files (so no build folder is left in the
checkout), installed with pip into a fresh target folder, offline, and used from ``/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import eqbench
from eqbench.resources import SHIPPED, shipped_dir
from eqbench.tasks import all_tasks

ROOT = Path(eqbench.__file__).resolve().parent.parent


def _source_files() -> list[str]:
    """The checkout's files that a build would see: tracked, plus untracked and not ignored."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding eqbench installed from a wheel (``pip install --target``)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout to build a wheel from")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    offline = ["--no-index", "--no-deps"]
    subprocess.run(
        [*pip, "wheel", *offline, "--no-build-isolation", "-q", "-w", str(tmp / "dist"), "."],
        cwd=source,
        check=True,
    )
    [wheel] = (tmp / "dist").glob("eqbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eqbench/_shipped/tasks/classification/knn.yaml" in names
    assert "eqbench/_shipped/configs/pretrain/vicreg_photos_cpu.yaml" in names
    assert "eqbench/_shipped/model_zoo/README.md" in names
    target = tmp / "site"
    subprocess.run(
        [*pip, "install", *offline, "-q", "--target", str(target), str(wheel)], check=True
    )
    return target


def run_installed(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m eqbench.cli ARGS`` from ``/`` with only the installed copy importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EQBENCH_")}
    env["PYTHONPATH"] = str(target)
    env["COLUMNS"] = "400"  # rich tables: names on one line
    return subprocess.run(
        [sys.executable, "-m", "eqbench.cli", *args],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_checkout_reads_its_own_folders() -> None:
    for name in SHIPPED:
        assert shipped_dir(name) == ROOT / name


def test_installed_wheel_lists_and_runs_tasks_from_anywhere(
    installed: Path, tmp_path: Path
) -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import eqbench, json; from eqbench.resources import shipped_dir; "
            "from eqbench.tasks import all_tasks; "
            "print(json.dumps([eqbench.__file__, str(shipped_dir('tasks')), "
            "str(shipped_dir('configs')), sorted(all_tasks())]))",
        ],
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    module, tasks, configs, names = json.loads(probe.stdout)
    assert Path(module).is_relative_to(installed)  # not the checkout
    assert Path(tasks) == installed / "eqbench" / "_shipped" / "tasks"
    assert Path(configs).is_relative_to(installed)
    assert names == sorted(all_tasks())  # every task of the checkout, read from the install

    listed = run_installed(installed, "ls", "tasks")
    assert listed.returncode == 0, listed.stderr
    assert "synthetic/rotation" in listed.stdout and "classification/knn" in listed.stdout
    methods = run_installed(installed, "ls", "methods")
    assert methods.returncode == 0 and "vicreg_photos_cpu" in methods.stdout

    results = tmp_path / "results"
    args = ["eval", "--task", "classification/knn", "--checkpoint", "baseline:pixels"]
    args += ["--no-cache", "--results-dir", str(results)]
    for key, value in {"n_train": 24, "n_test": 12, "image_size": 32}.items():
        args += ["--set", f"{key}={value}"]
    evaluated = run_installed(installed, *args)
    assert evaluated.returncode == 0, evaluated.stderr
    [record] = [json.loads(p.read_text()) for p in results.rglob("*.json")]
    assert record["task"] == "classification/knn"
