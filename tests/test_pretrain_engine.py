"""The pretraining engine: configs, resume bit-for-bit, NaN stop, checkpoints, CLI, torchrun."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from eqbench.backbones import create_encoder
from eqbench.checkpoints import load_state_file
from eqbench.dataclass_dicts import from_dict
from eqbench.errors import ConfigError, EqbenchError
from eqbench.methods import METHODS, build_method
from eqbench.models import load_model
from eqbench.train import (
    CHECKPOINT_NAME,
    LOG_NAME,
    PretrainConfig,
    available_configs,
    load_pretrain_config,
    pretrain,
)
from eqbench.train.cli import pretrain_command
from eqbench.train.schedule import learning_rate, teacher_momentum, weight_decay

TINY: dict[str, Any] = {
    "method": "tir+vicreg",
    "backbone": "micro_vit",
    "img_size": 32,
    "dataset": "photos",
    "n_images": 12,  # not a multiple of the batch: steps straddle epochs
    "batch_size": 8,
    "steps": 4,
    "lr": 1e-3,
    "warmup_steps": 1,
    "weight_decay": 0.05,
    "weight_decay_end": 0.2,
    "grad_clip": 1.0,
    "checkpoint_every": 2,
    "log_every": 1,
    "device": "cpu",
    "method_options": {"expander_dims": [32, 32]},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides: Any) -> PretrainConfig:
    return from_dict(PretrainConfig, {**TINY, **overrides}, "test config")


def steps_logged(out: Path) -> list[dict[str, Any]]:
    lines = (out / LOG_NAME).read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Recursive exact equality of checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# ------------------------------------------------------------------------------------ configs
def test_shipped_configs_load_and_name_their_method() -> None:
    names = set(available_configs())
    expected = {
        "vicreg_photos_cpu",
        "tir_vicreg_photos_cpu",
        "simclr_photos_cpu",
        "tir_simclr_photos_cpu",
        "vicreg_vits16_imagenet",
        "tir_vicreg_vits16_imagenet",
        "dino_photos_cpu",
        "ibot_photos_cpu",
        "tir_dino_photos_cpu",
        "tir_ibot_photos_cpu",
        "ibot_vits16_imagenet",
        "tir_ibot_vits16_imagenet",
        "tir_ibot_vitl16_imagenet",
        "dinov2_photos_cpu",
        "tir_dinov2_photos_cpu",
        "dinov2_vitl16_imagenet",
        "tir_dinov2_vitl16_imagenet",
        "essl_photos_cpu",
        "augself_photos_cpu",
        "equimod_photos_cpu",
        "sie_photos_cpu",
        "mae_photos_cpu",
        "gtsa_photos_cpu",
        "gtsa_vits16_imagenet",
    }
    assert expected <= names
    encoder = create_encoder("micro_vit", img_size=32)
    for name in sorted(names):
        cfg = load_pretrain_config(name)
        # Every option is one the method accepts (with the method's small test heads, and crops
        # and TIR widths shrunk where the config sets them, to keep this fast).
        small = dict(METHODS.get(cfg.method).test_options)
        shrunk = {"local_size": 16, "d_patch": 64, "d_equi": 16}
        small |= {k: v for k, v in shrunk.items() if k in cfg.method_options}
        build_method(cfg.method, encoder, 32, {**cfg.method_options, **small})


def test_include_and_dotted_overrides() -> None:
    cfg = load_pretrain_config(
        "tir_vicreg_photos_cpu", {"method_options.d_equi": 48, "steps": 30, "seed": 7}
    )
    assert cfg.method == "tir+vicreg" and cfg.img_size == 64  # inherited from vicreg_photos_cpu
    assert cfg.method_options["d_equi"] == 48
    # the dotted override is merged into method_options, not a replacement of them
    shipped = load_pretrain_config("tir_vicreg_photos_cpu").method_options
    assert {k: v for k, v in cfg.method_options.items() if k != "d_equi"} == {
        k: v for k, v in shipped.items() if k != "d_equi"
    }
    assert shipped["d_equi"] != 48 and len(shipped) > 5
    assert (cfg.steps, cfg.seed) == (30, 7)
    imagenet = load_pretrain_config("vicreg_vits16_imagenet")
    assert imagenet.peak_lr == pytest.approx(1e-4 * 2048 / 256)
    large = load_pretrain_config("tir_ibot_vitl16_imagenet")
    assert (large.method, large.backbone, large.batch_size) == (
        "tir+ibot",
        "vit_large_patch16",
        1024,
    )
    assert large.peak_lr == pytest.approx(5e-4 * 1024 / 256)
    assert large.method_options["d_equi"] == 2048 and large.method_options["n_local"] == 10
    dinov2 = load_pretrain_config("tir_dinov2_vitl16_imagenet")
    assert (dinov2.method, dinov2.backbone, dinov2.batch_size) == (
        "tir+dinov2",
        "vit_large_patch16",
        2048,
    )
    assert dinov2.peak_lr == pytest.approx(4e-3) and dinov2.warmup_steps == 6256  # 10 epochs
    options = dinov2.method_options
    assert (options["d_patch"], options["d_equi"], options["transform"]) == (2048, 512, "se2")
    assert (options["koleo_weight"], options["centering"]) == (0.1, "sinkhorn_knopp")


def test_config_errors_suggest_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'vicreg_photos_cpu'"):
        load_pretrain_config("vicreg_photo_cpu")
    with pytest.raises(ConfigError, match="Did you mean 'steps'"):
        load_pretrain_config("vicreg_photos_cpu", {"stpes": 3})
    with pytest.raises(ConfigError, match="warmup_steps"):
        load_pretrain_config("vicreg_photos_cpu", {"steps": 5, "warmup_steps": 10})
    cfg = load_pretrain_config("tir_vicreg_vits16_imagenet")
    with pytest.raises(ConfigError, match="--set dataset=imagefolder:PATH"):
        pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_config_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"include": "missing.yaml"}))
    with pytest.raises(ConfigError, match="does not exist"):
        load_pretrain_config(str(path))
    path.write_text(yaml.safe_dump(TINY))
    assert load_pretrain_config(str(path)) == tiny()


def test_schedules() -> None:
    cfg = tiny(steps=10, warmup_steps=2, lr=1.0, min_lr=0.1)
    lrs = [learning_rate(cfg, s) for s in range(10)]
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    assert weight_decay(cfg, 0) == pytest.approx(0.05)
    assert weight_decay(cfg, 9) == pytest.approx(0.2)
    momenta = [teacher_momentum(cfg, s) for s in range(10)]
    assert momenta[0] == pytest.approx(0.996) and momenta[-1] == pytest.approx(1.0)
    assert momenta[4] == pytest.approx(1.0 - 0.004 * 0.5 * (1 + math.cos(math.pi * 4 / 9)))
    assert all(a <= b for a, b in itertools.pairwise(momenta))
    with pytest.raises(ConfigError, match="teacher momenta"):
        tiny(teacher_momentum=1.5)


# ------------------------------------------------------------------------------ the engine
#: Options beyond the registered test options (small heads) for the methods the resume test runs.
RESUME_OPTIONS: dict[str, dict[str, Any]] = {"tir+vicreg": {}, "tir+ibot": {"n_local": 1}}
#: Log fields that measure time, not the computation.
TIMING_FIELDS = {"images_per_s", "elapsed_s"}


@pytest.mark.parametrize("method", ["tir+vicreg", "tir+ibot"])
def test_resume_is_bit_for_bit(tmp_path: Path, method: str) -> None:
    options = {**METHODS.get(method).test_options, **RESUME_OPTIONS[method]}
    cfg = tiny(method=method, method_options=options)
    straight = pretrain(cfg, tmp_path / "straight")
    interrupted = pretrain(cfg, tmp_path / "resumed", stop_at=2)
    first_half = load_state_file(interrupted)[0]
    assert first_half["train_state"]["step"] == 2
    assert first_half["train_state"]["data_position"] == 16
    resumed = pretrain(cfg, tmp_path / "resumed", resume=True)

    a, b = load_state_file(straight)[0], load_state_file(resumed)[0]
    assert a["train_state"]["step"] == b["train_state"]["step"] == 4
    assert_same(a["backbone"], b["backbone"], "backbone")
    assert_same(a["train_state"], b["train_state"], "train_state")
    assert not torch.equal(  # training did move the weights
        first_half["backbone"]["model.patch_embed.proj.weight"],
        b["backbone"]["model.patch_embed.proj.weight"],
    )
    log_a, log_b = steps_logged(tmp_path / "straight"), steps_logged(tmp_path / "resumed")
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    for ra, rb in zip(log_a, log_b, strict=True):
        assert "recon" in ra and set(ra) == set(rb)
        assert all(ra[k] == rb[k] for k in set(ra) - TIMING_FIELDS)
    if method == "tir+ibot":  # the EMA teacher and the centres are saved and restored
        state = b["train_state"]["method_state"]
        teacher = state["teacher.encoder.model.patch_embed.proj.weight"]
        student = b["backbone"]["model.patch_embed.proj.weight"]
        initial = first_half["train_state"]["method_state"]
        assert not torch.equal(teacher, student)
        assert not torch.equal(teacher, initial["teacher.encoder.model.patch_embed.proj.weight"])
        assert float(state["dino_loss.center"].abs().sum()) > 0
        assert float(state["patch_loss.center"].abs().sum()) > 0
        assert log_b[0]["teacher_momentum"] == pytest.approx(0.996)
        assert log_b[-1]["teacher_momentum"] == pytest.approx(1.0)
    else:
        assert "teacher_momentum" not in log_b[0]
    config = yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())
    assert config["method"] == method and config["steps"] == 4

    # A finished run is not overwritten, and a changed config does not resume it.
    with pytest.raises(EqbenchError, match="--resume"):
        pretrain(cfg, tmp_path / "resumed")
    with pytest.raises(ConfigError, match="lr"):
        pretrain(tiny(lr=5e-4), tmp_path / "resumed", resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eqbench.methods.vicreg import VICRegObjective

    original = VICRegObjective.forward
    calls = {"n": 0}

    def poisoned(self: VICRegObjective, f1: torch.Tensor, f2: torch.Tensor) -> Any:
        calls["n"] += 1
        out = original(self, f1, f2)
        if calls["n"] == 3:  # the third step
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(VICRegObjective, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(EqbenchError, match=r"nan at step 3 .*step 2\) is kept"):
        pretrain(tiny(method="vicreg"), out)
    state = load_state_file(out / CHECKPOINT_NAME)[0]
    assert state["train_state"]["step"] == 2
    assert [r["step"] for r in steps_logged(out)] == [1, 2]


def test_runs_repeat_whatever_global_generators_held_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code that draws from Python's or NumPy's global generator inside a step (a user's method
    or augmentation) still gives the same weights for the same seed."""
    from eqbench.methods.vicreg import VICRegObjective

    original = VICRegObjective.forward

    def jittered(self: VICRegObjective, f1: torch.Tensor, f2: torch.Tensor) -> Any:
        out = original(self, f1, f2)
        out["loss"] = out["loss"] * (1.0 + 0.1 * random.random() + 0.1 * np.random.rand())
        return out

    monkeypatch.setattr(VICRegObjective, "forward", jittered)
    cfg = tiny(method="vicreg", steps=2)
    runs = []
    for outer_seed in (1, 2):
        random.seed(outer_seed)
        np.random.seed(outer_seed)
        runs.append(load_state_file(pretrain(cfg, tmp_path / f"run{outer_seed}"))[0])
    assert_same(runs[0]["backbone"], runs[1]["backbone"], "backbone")
    assert_same(runs[0]["train_state"]["rng"], runs[1]["train_state"]["rng"], "rng")
    other = load_state_file(pretrain(tiny(method="vicreg", steps=2, seed=7), tmp_path / "s7"))[0]
    assert not torch.equal(  # and the run seed does reach them
        other["backbone"]["model.patch_embed.proj.weight"],
        runs[0]["backbone"]["model.patch_embed.proj.weight"],
    )


def test_checkpoint_loads_as_a_model(tmp_path: Path) -> None:
    path = pretrain(tiny(method="simclr", steps=2, method_options={}), tmp_path / "run")
    loaded = load_model(str(path), img_size=32)
    assert loaded.info["method"] == "simclr"
    assert loaded.info["config"]["backbone"] == "micro_vit"
    saved = load_state_file(path)[0]["backbone"]
    for key, value in loaded.encoder.state_dict().items():
        assert torch.equal(value, saved[key])
    features = loaded.encoder(torch.rand(2, 3, 32, 32))
    assert features.patch.shape == (2, 4, 64) and features.cls is not None
    assert torch.isfinite(features.patch).all()


@pytest.mark.parametrize(
    ("method", "options", "expected"),
    [
        ("simclr", {}, "avgpool"),
        ("simclr", {"pool": "cls"}, "cls"),
    ],
)
def test_feature_auto_reads_the_feature_the_method_trained(
    tmp_path: Path, method: str, options: dict[str, Any], expected: str
) -> None:
    from eqbench.protocols.run import EvalConfig, evaluate

    path = pretrain(tiny(method=method, steps=2, method_options=options), tmp_path / "run")
    assert load_model(str(path), img_size=32).info["trained_feature"] == expected
    sets = {"feature": "auto", "n_train": 24, "n_test": 12, "image_size": 32}
    for checkpoint, feature in ((str(path), expected), ("baseline:pixels", "cls")):
        [(record, _)] = evaluate(
            EvalConfig(
                tasks="classification/knn",
                checkpoint=checkpoint,
                results_dir=tmp_path / "results",
                cache_dir=None,
                overrides=sets,
                show_progress=False,
            )
        )
        assert record.config["feature"] == feature  # the resolved feature is recorded


def test_cli_runs_resumes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "method": "vicreg"}))
    out = str(tmp_path / "run")
    runner = CliRunner()
    args = ["--config", str(config), "--out", out, "--set", "steps=2"]
    result = runner.invoke(pretrain_command, args)
    assert result.exit_code == 0, result.output
    again = runner.invoke(pretrain_command, args)
    assert again.exit_code == 2 and "--resume" in again.output
    more = runner.invoke(pretrain_command, [*args[:-1], "steps=3", "--resume"])
    assert more.exit_code == 0, more.output
    assert load_state_file(Path(out) / CHECKPOINT_NAME)[0]["train_state"]["step"] == 3
    typo = runner.invoke(pretrain_command, ["-c", "tir_vicreg_photo_cpu", "--out", out])
    assert typo.exit_code == 2 and "Did you mean 'tir_vicreg_photos_cpu'" in typo.output


@pytest.mark.slow
def test_torchrun_two_processes_agree(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "steps": 2}))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "eqbench.train.cli",
        "--config",
        str(config),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    end = next(r for r in records if r.get("event") == "end")
    assert start["world_size"] == 2
    hashes = end["param_sha256_per_rank"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    state = load_state_file(out / CHECKPOINT_NAME)[0]
    assert state["train_state"]["step"] == 2 and state["train_state"]["world_size"] == 2
    assert load_model(str(out / CHECKPOINT_NAME), img_size=32).info["method"] == "tir+vicreg"
