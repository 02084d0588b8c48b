"""The command line: listings, and bad input answered with one line, a non-zero exit and no file."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from eqbench.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "what",
    ["tasks", "groups", "datasets", "backbones", "transforms", "protocols", "methods", "zoo"],
)
def test_ls(what: str) -> None:
    code, out = run("ls", what)
    assert code == 0, out
    if what == "tasks":
        assert "synthetic/rotation" in out and "classification/knn" in out
    if what == "datasets":
        assert "photos" in out and "cifar10" in out and "imagefolder" in out
    if what == "backbones":
        assert "micro_vit" in out


def test_ls_methods_lists_every_registered_method_with_its_paper_and_configs() -> None:
    from eqbench.catalogue import listing
    from eqbench.methods import METHODS
    from eqbench.train.config import available_configs, configs_dir, read_config_file

    rows, headers = listing("methods")
    assert headers == ("method", "paper", "description", "shipped configs")
    assert [r[0] for r in rows] == list(METHODS.names())
    by_name = {r[0]: r for r in rows}
    assert "arXiv 2304.08014" in by_name["gtsa"][1] and "arXiv 2105.04906" in by_name["vicreg"][1]
    assert "arXiv 2503.18753" in by_name["tir+vicreg"][1]
    for name, row in by_name.items():
        assert "arXiv" in row[1], name  # every method cites its paper
    # every shipped config is listed beside the method it trains (its resolved `method:`)
    for config in available_configs():
        method = read_config_file(configs_dir() / f"{config}.yaml")["method"]
        assert config in by_name[method][3].split(", "), config
    assert "vicreg_photos_cpu" in by_name["vicreg"][3].split(", ")
    assert "tir_vicreg_all_blur_photos_cpu" in by_name["tir+vicreg"][3].split(", ")
    assert "dinov2_photos_cpu" not in by_name["dino"][3].split(", ")


def test_help_explains() -> None:
    code, out = run("eval", "--help")
    assert code == 0 and "--checkpoint" in out and "baseline:pixels" in out


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str, dict[str, str] | None]]:
    truncated = tmp / "truncated.pt"
    torch.save({"w": torch.zeros(1000)}, tmp / "full.pt")
    truncated.write_bytes((tmp / "full.pt").read_bytes()[:500])
    code_pickle = tmp / "code.pt"
    code_pickle.write_bytes(pickle.dumps({"w": Payload()}))
    empty = tmp / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    bad_tasks = tmp / "tasks"
    (bad_tasks / "a").mkdir(parents=True)
    (bad_tasks / "a" / "b.yaml").write_text("task: a/b\nversion: [1\n")
    knn = ["eval", "--task", "classification/knn", "--checkpoint"]
    return {
        "unknown task": (
            ["eval", "--task", "synthetic/rotaton", "--checkpoint", "baseline:pixels"],
            "Did you mean 'synthetic/rotation'",
            None,
        ),
        "missing checkpoint": ([*knn, str(tmp / "nope.pt")], "nope.pt", None),
        "truncated checkpoint": ([*knn, str(truncated)], "truncated or corrupt", None),
        "code pickle": ([*knn, str(code_pickle)], "weights_only", None),
        "missing dataset folder": (
            [*knn, "baseline:pixels", "--dataset", f"imagefolder:{tmp / 'nope'}"],
            "does not exist",
            None,
        ),
        "empty dataset folder": (
            [*knn, "baseline:pixels", "--dataset", f"imagefolder:{empty}"],
            "imagefolder",
            None,
        ),
        "unknown dataset format": (
            [*knn, "baseline:pixels", "--dataset", f"imagefolde:{tmp}"],
            "Did you mean 'imagefolder'",
            None,
        ),
        "malformed task file": (
            [*knn, "baseline:pixels"],
            "not valid YAML",
            {"EQBENCH_TASKS_DIR": str(bad_tasks)},
        ),
        "unknown option": (
            [
                "eval",
                "--task",
                "classification/knn",
                "--checkpoint",
                "baseline:pixels",
                "--set",
                "n_trian=5",
            ],
            "n_train",
            None,
        ),
    }


IDS = [
    "unknown task",
    "missing checkpoint",
    "truncated checkpoint",
    "code pickle",
    "missing dataset folder",
    "empty dataset folder",
    "unknown dataset format",
    "malformed task file",
    "unknown option",
]


@pytest.mark.parametrize("case", IDS)
def test_bad_input_one_line_error_no_file(case: str, tmp_path: Path) -> None:
    args, message, env = _bad_inputs(tmp_path)[case]
    results = tmp_path / "results"
    code, out = run(*args, "--results-dir", str(results), "--quiet", env=env)
    assert code != 0, out
    assert "Traceback" not in out
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), out
    assert message in out, out
    assert not results.exists() or not any(results.rglob("*")), "a result file was written"


def test_real_process_exit_code_and_stderr(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "eqbench.cli",
            "eval",
            "--task",
            "nosuchtask",
            "--checkpoint",
            "baseline:pixels",
            "--results-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Unknown task 'nosuchtask'" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "r").exists()
