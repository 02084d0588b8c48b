"""Hostile and careless input: every case is one line naming the remedy, exit code 2, no
traceback, and no file written; files never make eqbench open other files or leave its folders."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from fixtures import dump_py2, make_cifar10, make_imagefolder

from eqbench.backbones import create_encoder
from eqbench.checkpoints import save_checkpoint
from eqbench.cli import main
from eqbench.errors import CheckpointError

KNN = "classification/knn"
#: Small kNN runs on digits: seconds on a CPU.
FAST_KNN = ("--set", "n_train=60", "--set", "n_test=20", "--set", "image_size=16")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]


def assert_one_line_error(code: int, out: str, message: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    assert message in out, out


def micro_checkpoint(path: Path, **header_changes: Any) -> Path:
    """An eqbench checkpoint of a micro ViT whose header's backbone kwargs / name are changed."""
    torch.manual_seed(0)
    encoder = create_encoder("micro_vit", img_size=32, patch_size=8)
    save_checkpoint(path, encoder, method="test", config={})
    if header_changes:
        state = torch.load(path, weights_only=True)
        kwargs = header_changes.pop("kwargs", {})
        state["eqbench"]["backbone"]["kwargs"].update(kwargs)
        state["eqbench"].update(header_changes)
        torch.save(state, path)
    return path


# ------------------------------------------------------------------ code from a checkpoint header


def test_header_checkpoint_path_never_opened(tmp_path: Path) -> None:
    """A header naming a file for timm to load is refused before timm sees it: the file is a
    FIFO, which would block whoever opens it for reading."""
    fifo = tmp_path / "payload.pt"
    os.mkfifo(fifo)
    ckpt = micro_checkpoint(tmp_path / "crafted.pt", kwargs={"checkpoint_path": str(fifo)})
    from eqbench.models import load_model

    outcome: dict[str, BaseException] = {}

    def load() -> None:
        try:
            load_model(str(ckpt), img_size=32)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():  # release the reader that opened the FIFO, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("the FIFO named by the header was opened")
    assert isinstance(outcome.get("error"), CheckpointError)
    assert "checkpoint_path" in str(outcome["error"])
    assert "is not an architecture option" in str(outcome["error"])


class _Payload:
    """Unpickling this touches ``marker``: the proof that a pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("key", ["checkpoint_path", "pretrained_cfg_overlay"])
def test_header_pickle_with_reduce_never_runs(key: str, tmp_path: Path) -> None:
    """A header naming a real pickle whose ``__reduce__`` runs code: refused before timm (of any
    version; ``scripts/test.sh`` reruns this under the oldest timm ``pyproject.toml`` allows,
    ``EQBENCH_EXPECT_TIMM``) could open it; the marker the code would create never appears."""
    import timm

    expected = os.environ.get("EQBENCH_EXPECT_TIMM")
    assert expected is None or timm.__version__ == expected, timm.__version__
    marker = tmp_path / "code-ran"
    payload = tmp_path / "payload.pth"
    torch.save({"model": _Payload(marker)}, payload)
    value: object = str(payload) if key == "checkpoint_path" else {"file": str(payload)}
    ckpt = micro_checkpoint(tmp_path / "crafted.pt", kwargs={key: value})
    from eqbench.models import load_model

    with pytest.raises(CheckpointError, match="is not an architecture option"):
        load_model(str(ckpt), img_size=32)
    assert not marker.exists()


HEADER_CASES = {
    "checkpoint_path": ({"checkpoint_path": "other.pt"}, "is not an architecture option"),
    "pretrained": ({"pretrained": True}, "'pretrained' is not an architecture option"),
    "pretrained_cfg_overlay": (
        {"pretrained_cfg_overlay": {"file": "/etc/passwd"}},
        "'pretrained_cfg_overlay' is not an architecture option",
    ),
    "img_size 0": ({"img_size": 0}, "'img_size' must be an integer in [1, 8192], got 0"),
    "patch_size 0": ({"patch_size": 0}, "'patch_size' must be an integer"),
    "patch_size str": ({"patch_size": "8"}, "'patch_size' must be an integer"),
    "heads do not divide width": ({"num_heads": 5}, "timm cannot build"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_bad_header_options_are_one_line_errors(case: str, tmp_path: Path) -> None:
    kwargs, message = HEADER_CASES[case]
    ckpt = micro_checkpoint(tmp_path / "crafted.pt", kwargs=kwargs)
    results = tmp_path / "results"
    code, out = run(
        "eval", "-t", KNN, "-c", str(ckpt), "--results-dir", str(results), "-q", *FAST_KNN
    )
    assert_one_line_error(code, out, message)
    assert not files_under(results)


def test_header_name_cannot_leave_the_results_dir(tmp_path: Path) -> None:
    ckpt = micro_checkpoint(tmp_path / "named.pt", name="..")
    results = tmp_path / "deep" / "results"
    code, out = run(
        "eval", "-t", KNN, "-c", str(ckpt), "--results-dir", str(results), "-q", *FAST_KNN
    )
    assert code == 0, out
    written = files_under(tmp_path / "deep")
    assert len(written) == 1 and written[0].is_relative_to(results)
    assert written[0].relative_to(results).parts[0] == "__"


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = create_encoder("micro_vit", img_size=32, patch_size=8)
    with torch.no_grad():
        next(iter(encoder.parameters())).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", encoder, method="test", config={})
    results = tmp_path / "results"
    code, out = run(
        "eval", "-t", KNN, "-c", str(tmp_path / "nan.pt"), "--results-dir", str(results), "-q"
    )
    assert_one_line_error(code, out, "NaN or infinite weights")
    assert not files_under(results)


def test_features_that_overflow_are_refused(tmp_path: Path) -> None:
    """Finite weights whose features overflow float32 (inf, then NaN after LayerNorm) stop the
    evaluation with an error instead of a chance-level result."""
    torch.manual_seed(0)
    encoder = create_encoder("micro_vit", img_size=32, patch_size=8)
    with torch.no_grad():
        for p in encoder.parameters():
            p.mul_(1e30)
    assert all(bool(p.isfinite().all()) for p in encoder.parameters())
    save_checkpoint(tmp_path / "big.pt", encoder, method="test", config={})
    results = tmp_path / "results"
    code, out = run(
        "eval",
        "-t",
        KNN,
        "-c",
        str(tmp_path / "big.pt"),
        "--results-dir",
        str(results),
        "-q",
        "--no-cache",
    )
    assert_one_line_error(code, out, "NaN or infinite values")
    assert not files_under(results)


# ------------------------------------------------------------------------ options and data files


def _bad_eval_inputs(tmp: Path) -> dict[str, tuple[list[str], str, dict[str, str] | None]]:
    knn = ["eval", "-t", KNN, "-c", "baseline:pixels"]
    one_class = tmp / "one_class"
    make_imagefolder(one_class, classes=1, per_class=4, size=16)
    (tmp / "a_file").write_text("not a folder")
    tasks = tmp / "tasks"
    (tasks / "a").mkdir(parents=True)
    (tasks / "a" / "b.yaml").write_bytes(b"task: a/b\ndescription: caf\xe9\n")
    secret = tmp / "secret.txt"
    secret.write_text("TOPSECRET-TOKEN")
    include_abs = tmp / "tasks_abs"
    (include_abs / "a").mkdir(parents=True)
    (include_abs / "a" / "b.yaml").write_text(f"include: {secret}\ntask: a/b\n")
    include_out = tmp / "tasks_out"
    (include_out / "a").mkdir(parents=True)
    (include_out / "a" / "b.yaml").write_text("include: ../../secret.txt\ntask: a/b\n")
    include_text = tmp / "tasks_text"
    (include_text / "a").mkdir(parents=True)
    (include_text / "a" / "_base.yaml").write_text("TOPSECRET-TOKEN\n")
    (include_text / "a" / "b.yaml").write_text("include: _base.yaml\ntask: a/b\n")
    zoo = tmp / "zoo"
    zoo.mkdir()
    (zoo / "latin1.yaml").write_bytes(b"id: latin1\nsource: caf\xe9\n")
    cifar = make_cifar10(tmp / "cifar")
    batch = {"labels": ["cat"] * 6, "data": cifar.train_data[:6], "batch_label": "b"}
    dump_py2(batch, cifar.folder / "data_batch_1")
    markup = tmp / "[red]x[/]:x:.pt"
    return {
        "markup in a path": ([*knn[:4], str(markup)], f"'{markup}'", None),
        "batch size 0": ([*knn, "--batch-size", "0"], "--batch-size must be a positive", None),
        "negative seed": (
            ["eval", "-t", "synthetic/rotation", "-c", "baseline:pixels", "--seed", "-1"],
            "--seed must be an integer in [0, 2^32)",
            None,
        ),
        "ks=[0]": ([*knn, "--set", "ks=[0]"], "ks must be a non-empty list", None),
        "ks=[]": ([*knn, "--set", "ks=[]"], "ks must be a non-empty list", None),
        "ks without the primary k": ([*knn, "--set", "ks=[5]"], "primary metric", None),
        "temperature=0": ([*knn, "--set", "temperature=0"], "temperature must be a positive", None),
        "image_size=0": ([*knn, "--set", "image_size=0"], "image_size must be >= 1", None),
        "feature=bogus": ([*knn, "--set", "feature=bogus"], "feature must be one of", None),
        "n_train=-5": ([*knn, "--set", "n_train=-5"], "n_train must be >= 1", None),
        "linear val_fraction": (
            [
                "eval",
                "-t",
                "classification/linear",
                "-c",
                "baseline:pixels",
                "--set",
                "val_fraction=1.5",
            ],
            "val_fraction must lie in (0, 1)",
            None,
        ),
        "two tasks, second invalid": (
            [
                "eval",
                "-t",
                "classification/linear,classification/knn",
                "-c",
                "baseline:pixels",
                "--set",
                "temperature=0",
            ],
            "temperature must be a positive",
            None,
        ),
        "one-class linear probe": (
            [
                "eval",
                "-t",
                "classification/linear",
                "-c",
                "baseline:pixels",
                "--dataset",
                f"imagefolder:{one_class}",
            ],
            "needs at least two",
            None,
        ),
        "one-class knn": (
            [*knn, "--dataset", f"imagefolder:{one_class}"],
            "needs at least two",
            None,
        ),
        "cifar labels not integers": (
            [*knn, "--dataset", f"cifar10:{cifar.folder}"],
            "not integer class indices",
            None,
        ),
        "results dir is a file": (
            [*knn[:4], "baseline:pixels", "--results-dir", str(tmp / "a_file" / "r")],
            "is a file, not a folder",
            None,
        ),
        "cache dir is a file": (
            [*knn, "--cache-dir", str(tmp / "a_file")],
            "is a file, not a folder",
            None,
        ),
        "non-UTF-8 task file": (knn, "is not UTF-8 text", {"EQBENCH_TASKS_DIR": str(tasks)}),
        "include absolute path": (
            knn,
            "must be a relative path",
            {"EQBENCH_TASKS_DIR": str(include_abs)},
        ),
        "include outside the tree": (knn, "lies outside", {"EQBENCH_TASKS_DIR": str(include_out)}),
        "include of a non-mapping": (
            knn,
            "must hold a mapping of keys, not a str",
            {"EQBENCH_TASKS_DIR": str(include_text)},
        ),
        "non-UTF-8 zoo card": (
            [*knn[:4], "zoo:latin1"],
            "is not UTF-8 text",
            {"EQBENCH_ZOO_DIR": str(zoo)},
        ),
        "zoo id climbing out": (
            [*knn[:4], "zoo:../x"],
            "is not a zoo id",
            {"EQBENCH_ZOO_DIR": str(zoo)},
        ),
    }


@pytest.fixture(scope="module")
def bad_eval_inputs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, tuple[list[str], str, dict[str, str] | None]]]:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    return tmp, _bad_eval_inputs(tmp)


EVAL_CASE_NAMES = [
    "markup in a path",
    "batch size 0",
    "negative seed",
    "ks=[0]",
    "ks=[]",
    "ks without the primary k",
    "temperature=0",
    "image_size=0",
    "feature=bogus",
    "n_train=-5",
    "linear val_fraction",
    "two tasks, second invalid",
    "one-class linear probe",
    "one-class knn",
    "cifar labels not integers",
    "results dir is a file",
    "cache dir is a file",
    "non-UTF-8 task file",
    "include absolute path",
    "include outside the tree",
    "include of a non-mapping",
    "non-UTF-8 zoo card",
    "zoo id climbing out",
]


@pytest.mark.parametrize("case", EVAL_CASE_NAMES)
def test_bad_eval_input_is_one_line_and_writes_nothing(
    case: str,
    bad_eval_inputs: tuple[Path, dict[str, tuple[list[str], str, dict[str, str] | None]]],
    tmp_path: Path,
    _private_cache: Path,
) -> None:
    _, cases = bad_eval_inputs
    args, message, env = cases[case]
    results = tmp_path / "results"
    if "--results-dir" not in args:
        args = [*args, "--results-dir", str(results)]
    code, out = run(*args, "-q", env=env)
    assert_one_line_error(code, out, message)
    assert "TOPSECRET" not in out
    assert not files_under(results, _private_cache), "a file was written"


def test_error_text_is_printed_literally() -> None:
    from eqbench.cli import err_console, print_error

    with err_console.capture() as captured:
        print_error("bad [red]value[/] in ':x:' and [/]")
    assert captured.get().strip() == "Error: bad [red]value[/] in ':x:' and [/]"


def test_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from eqbench.protocols import run as runner

    def full(*_: Any, **__: Any) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "x.json"))

    monkeypatch.setattr(runner, "write_result", full)
    code, out = run(
        "eval",
        "-t",
        KNN,
        "-c",
        "baseline:pixels",
        "--results-dir",
        str(tmp_path / "r"),
        "-q",
        *FAST_KNN,
    )
    assert_one_line_error(code, out, "No space left on device")
    assert "Free disk space" in out


WRONG_TYPES = json.dumps(
    {
        "schema_version": "1",
        "task": "t",
        "task_version": 1,
        "model_id": "m",
        "checkpoint_sha256": "0",
        "dataset": "d",
        "metrics": {"top1": {"mean": 0.5, "std": 0.0}},
        "primary_metric": "top1",
        "seed": 0,
    }
).encode()


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe not utf-8", WRONG_TYPES, b"[1, 2]"],
    ids=["not UTF-8", "wrong types", "not an object"],
)
def test_leaderboard_skips_unreadable_results(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "bad.json").write_bytes(content)
    code, out = run("leaderboard", "--results-dir", str(tmp_path))
    assert code == 0, out
    assert "Traceback" not in out and "No results" in out


def test_submit_id_with_newline_is_refused(tmp_path: Path) -> None:
    ckpt = micro_checkpoint(tmp_path / "m.pt")
    code, out = run("submit", str(ckpt), "--id", "good\n", env={"EQBENCH_ZOO_DIR": str(tmp_path)})
    assert_one_line_error(code, out, "is not allowed")
    assert not list(tmp_path.glob("*.yaml"))


def test_yaml12_floats_in_overrides() -> None:
    from eqbench.overrides import parse_overrides

    assert parse_overrides(["lr=1e-3", "x=.5", "y=1E+2", "s=abc"]) == {
        "lr": 1e-3,
        "x": 0.5,
        "y": 100.0,
        "s": "abc",
    }


# -------------------------------------------------------------------------------- pretraining

TINY_PRETRAIN: dict[str, Any] = {
    "method": "vicreg",
    "backbone": "micro_vit",
    "img_size": 32,
    "dataset": "photos",
    "n_images": 8,
    "batch_size": 4,
    "steps": 2,
    "warmup_steps": 0,
    "checkpoint_every": 1,
    "log_every": 1,
    "device": "cpu",
    "tensorboard": False,
}


def _config(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps({**TINY_PRETRAIN, **changes}))
    return path


def test_pretrain_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my own config\n")
    code, output = run("pretrain", "-c", str(_config(tmp_path)), "--out", str(out))
    assert_one_line_error(code, output, "is not an eqbench run")
    assert (out / "config.yaml").read_text() == "my own config\n"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_pretrain_backbone_option_typo(tmp_path: Path) -> None:
    config = _config(tmp_path, backbone_options={"drop_pth_rate": 0.1})
    out = tmp_path / "run"
    code, output = run("pretrain", "-c", str(config), "--out", str(out))
    assert_one_line_error(code, output, "Did you mean 'drop_path_rate'")
    assert not out.exists()


def test_pretrain_non_utf8_config(tmp_path: Path) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"method: vicreg\nname: caf\xe9\n")
    code, output = run("pretrain", "-c", str(config), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, output, "is not UTF-8 text")
    assert not (tmp_path / "run").exists()


DINO_OPTIONS = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "n_local": 0}


def test_resume_rewrites_a_teacher_left_apart(tmp_path: Path) -> None:
    """A kill between teacher.pt and checkpoint.pt: --resume rewrites the teacher from the
    checkpoint, so the pair agrees again."""
    from eqbench.checkpoints import load_state_file
    from eqbench.train.config import load_pretrain_config
    from eqbench.train.engine import pretrain

    cfg = load_pretrain_config(
        str(
            _config(
                tmp_path,
                method="dino",
                method_options={
                    "out_dim": 32,
                    "hidden_dim": 32,
                    "bottleneck_dim": 16,
                    "n_local": 0,
                },
            )
        )
    )
    out = tmp_path / "run"
    pretrain(cfg, out, progress=False)
    teacher = out / "teacher.pt"
    good = teacher.read_bytes()
    state, _ = load_state_file(teacher)
    stale = {k: torch.zeros_like(v) for k, v in state["backbone"].items()}
    torch.save({**state, "backbone": stale}, teacher)
    pretrain(cfg, out, resume=True, progress=False)
    resumed, _ = load_state_file(teacher)
    for key, value in load_state_file_from_bytes(good, tmp_path)["backbone"].items():
        assert torch.equal(resumed["backbone"][key], value), key


def load_state_file_from_bytes(data: bytes, tmp: Path) -> dict[str, Any]:
    from eqbench.checkpoints import load_state_file

    path = tmp / "copy.pt"
    path.write_bytes(data)
    return load_state_file(path)[0]


# ------------------------------------------------------------------------- files and folders


def test_imagefolder_symlink_loop_counts_each_image_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from eqbench.data.imagefolder import imagefolder

    root = make_imagefolder(tmp_path / "ds", classes=2, per_class=2, size=8)
    cls = root / "train" / "class_0"
    (cls / "loop").symlink_to(cls, target_is_directory=True)
    ds = imagefolder(str(root), "train", None, 0)
    assert len(ds) == 4
    assert "skipped 1 folder(s) reached again through symbolic links" in caplog.text


def test_imagefolder_two_symlink_loops_end(tmp_path: Path) -> None:
    """Two loops made the walk exponential: it must end, and quickly."""
    from eqbench.data.imagefolder import imagefolder

    root = make_imagefolder(tmp_path / "ds", classes=2, per_class=2, size=8)
    cls = root / "train" / "class_0"
    (cls / "sub").mkdir()
    (cls / "sub" / "back").symlink_to(cls, target_is_directory=True)
    (cls / "sub" / "again").symlink_to(cls / "sub", target_is_directory=True)
    sizes: list[int] = []
    thread = threading.Thread(
        target=lambda: sizes.append(len(imagefolder(str(root), "train", None, 0))), daemon=True
    )
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the walk did not end"
    assert sizes == [4]


def _invert(path: Path) -> None:
    """Other bytes of the same length under the same name."""
    path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edited", "copied with its mtime"])
def test_imagefolder_fingerprint_follows_contents(tmp_path: Path, keep_mtime: bool) -> None:
    from eqbench.data.imagefolder import imagefolder

    root = make_imagefolder(tmp_path / "ds", classes=2, per_class=2, size=8)
    image = root / "val" / "class_0" / "img_0.png"
    before = imagefolder(str(root), "test", None, 0).fingerprint()
    stat = image.stat()
    _invert(image)
    assert image.stat().st_size == stat.st_size
    if keep_mtime:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = imagefolder(str(root), "test", None, 0).fingerprint()
    assert before != after


def test_changed_images_are_not_served_from_the_cache(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds", classes=2, per_class=3, size=8)
    args = ["eval", "-t", KNN, "-c", "baseline:pixels", "--dataset", f"imagefolder:{root}", "-q"]
    args += ["--set", "image_size=8", "--set", "ks=[1, 20]"]
    code, out = run(*args, "--results-dir", str(tmp_path / "r1"))
    assert code == 0, out
    for j in range(3):  # the test images of each class now look like the other class
        a, b = root / "val" / "class_0" / f"img_{j}.png", root / "val" / "class_1" / f"img_{j}.png"
        if a.exists() and b.exists():
            data_a, data_b = a.read_bytes(), b.read_bytes()
            a.write_bytes(data_b)
            b.write_bytes(data_a)
    code, out = run(*args, "--results-dir", str(tmp_path / "r2"))
    assert code == 0, out
    code, out = run(*args, "--results-dir", str(tmp_path / "r3"), "--no-cache")
    assert code == 0, out

    def top1(folder: Path) -> tuple[float, dict[str, Any]]:
        (path,) = files_under(folder)
        data = json.loads(path.read_text())
        return data["metrics"]["top1_k1"]["mean"], data["dataset_fingerprint"]

    cached, fp_cached = top1(tmp_path / "r2")
    fresh, fp_fresh = top1(tmp_path / "r3")
    assert cached == fresh
    assert fp_cached == fp_fresh != top1(tmp_path / "r1")[1]


# ----------------------------------------------------------------------------------- atomicity


def test_atomic_writes_keep_the_umask_mode_and_clean_stale_temporaries(tmp_path: Path) -> None:
    from eqbench.atomic import _owner_tag, write_text

    target = tmp_path / "x.json"
    host = _owner_tag().rsplit("-", 1)[0]
    dead = tmp_path / f".x.json.{host}-999999999.abcd1234.tmp"  # no such process
    dead.write_bytes(b"0" * 100)
    alive = tmp_path / f".x.json.{_owner_tag()}.abcd1234.tmp"  # this process's: kept
    alive.write_bytes(b"1")
    old = os.umask(0o022)
    try:
        write_text(target, "{}\n")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
    assert not dead.exists() and alive.exists()


def test_a_failed_write_leaves_no_temporary(tmp_path: Path) -> None:
    from eqbench.atomic import write_with

    def fail(_: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_with(tmp_path / "y.pt", fail)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- hostile --set values, all tasks

HOSTILE_VALUES = [
    "0",
    "-1",
    "-5",
    "1e-3",
    "1e9",
    ".nan",
    "-.inf",
    "true",
    "null",
    "[]",
    "[0]",
    "[-1, 2]",
    "{a: 1}",
    "bogus",
    "'[/]:x:'",
    "2.5",
]


def test_every_set_value_fails_only_with_one_line_errors() -> None:
    """Hostile ``--set`` values for every option of every task: planning either succeeds or
    raises an :class:`EqbenchError` whose message is one line (never another exception)."""
    import dataclasses

    from eqbench.errors import EqbenchError
    from eqbench.overrides import parse_overrides
    from eqbench.protocols import PROTOCOLS
    from eqbench.protocols.run import EvalConfig, plan
    from eqbench.tasks import all_tasks

    for name, spec in all_tasks().items():
        for field in dataclasses.fields(PROTOCOLS.get(spec.protocol).Config):
            for value in HOSTILE_VALUES:
                overrides = parse_overrides([f"{field.name}={value}"])
                try:
                    plan(EvalConfig(tasks=name, checkpoint="baseline:pixels", overrides=overrides))
                except EqbenchError as err:
                    assert "\n" not in str(err).strip(), (name, field.name, value)
