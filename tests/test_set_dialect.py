"""One ``--set`` dialect: dotted keys reach into mapping options in ``eval`` as in ``pretrain``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from eqbench.cli import main
from eqbench.errors import ConfigError
from eqbench.protocols.run import EvalConfig, plan
from eqbench.train import load_pretrain_config


def _plan(**overrides: object) -> object:
    cfg = EvalConfig(tasks="synthetic/rotation", checkpoint="baseline:pixels", overrides=overrides)
    return plan(cfg)[0].config


def test_dotted_key_sets_one_entry_of_a_mapping_option() -> None:
    config = _plan(**{"options.degrees": [-10, 10]})
    assert config.options["degrees"] == [-10, 10]  # type: ignore[attr-defined]
    assert _plan().options["degrees"] == [-45, 45]  # type: ignore[attr-defined]  # task default


def test_dotted_key_into_a_scalar_or_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="'n_train' is not a mapping"):
        _plan(**{"n_train.x": 1})
    with pytest.raises(ConfigError, match=r"matches no option.*options"):
        _plan(**{"optons.degrees": [-10, 10]})


def test_pretrain_reads_the_same_dotted_keys() -> None:
    cfg = load_pretrain_config("tir_vicreg_photos_cpu", {"method_options.num_targets": 3})
    assert cfg.method_options["num_targets"] == 3


def test_eval_cli_accepts_a_dotted_set_and_validates_before_compute(tmp_path: Path) -> None:
    out = tmp_path / "res"
    result = CliRunner().invoke(
        main,
        ["eval", "--task", "synthetic/rotation", "--checkpoint", "baseline:pixels",
         "--set", "options.degrees=[-10,10]", "--set", "options.nope=1",
         "--results-dir", str(out)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "nope" in result.output and "Traceback" not in result.output
    assert not out.exists()
