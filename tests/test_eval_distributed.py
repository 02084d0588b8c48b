"""``eqbench eval`` under torchrun and submitit: sharded feature extraction, each image encoded
once, metrics bit-identical to one process, results and cache entries written by rank 0 alone."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from eqbench.cli import main
from eqbench.data.base import DatasetSpec
from eqbench.features.sharding import prefetch, shard_spans
from eqbench.features.store import FeatureStore, batch_spans
from eqbench.models import load_model
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.run import EvalConfig, plan, resolve_feature
from eqbench.tasks import resolve_tasks
from eqbench.train.distributed import DistContext

#: One small run of the three frozen-feature tasks: kNN and the linear probe on digits, the
#: rotation probe on photos; batches of 16 so that both ranks get several.
TASKS = "classification/knn,classification/linear,synthetic/rotation"
SETS = {
    "n_train": 100,
    "n_test": 50,
    "image_size": 32,
    "c_steps": 3,
    "probe_seeds": 1,
    "max_epochs": 3,
    "hidden": [16],
}
EVAL_ARGS = [
    "eval",
    "-q",
    "-t",
    TASKS,
    "-c",
    "baseline:random:micro_vit",
    "--batch-size",
    "16",
    *[arg for key, value in SETS.items() for arg in ("--set", f"{key}={value}")],
]

#: Installed in the subprocesses through ``sitecustomize``: every image the encoder sees is
#: logged as one sha1 line in ``$ENCODED_LOG_DIR/rank<RANK>.txt``.
COUNTING_HOOK = """
import hashlib, os

if os.environ.get("ENCODED_LOG_DIR"):
    from eqbench.features.store import FeatureStore

    _init = FeatureStore.__init__

    def _counting_init(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        forward = self.encoder.forward
        log = os.path.join(os.environ["ENCODED_LOG_DIR"], f"rank{os.environ.get('RANK', '0')}.txt")

        def counting(images):
            with open(log, "a") as fh:
                for image in images:
                    fh.write(hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest() + "\\n")
            return forward(images)

        self.encoder.forward = counting

    FeatureStore.__init__ = _counting_init
"""


@pytest.mark.parametrize(("n_batches", "world"), [(7, 2), (8, 3), (1, 2), (2, 4), (0, 2), (5, 1)])
def test_shards_are_contiguous_and_cover_every_batch_once(n_batches: int, world: int) -> None:
    spans = batch_spans(n_batches * 16 - (3 if n_batches else 0), 16)
    shards = [shard_spans(spans, rank, world) for rank in range(world)]
    assert [span for shard in shards for span in shard] == spans
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard_spans(spans, world, world)


@pytest.mark.parametrize(
    "task", ["classification/knn", "classification/linear", "synthetic/rotation", "invariance/flip"]
)
def test_listed_requests_are_what_the_protocol_encodes(task: str) -> None:
    """After the listed image sets are encoded, ``run`` encodes nothing more (under torchrun
    rank 0 would otherwise encode on its own)."""
    protocol = PROTOCOLS.get(resolve_tasks(task)[0].protocol)()
    fields = {f.name for f in dataclasses.fields(protocol.Config)}
    cfg = EvalConfig(
        tasks=task,
        checkpoint="baseline:random:micro_vit",
        cache_dir=None,
        overrides={k: v for k, v in SETS.items() if k in fields},
    )
    planned = plan(cfg)[0]
    model = load_model(cfg.checkpoint, img_size=32)
    config = resolve_feature(planned.config, model)
    store = FeatureStore(model.encoder, model.sha256, torch.device("cpu"), None, 16, False)
    ctx = EvalContext(model, store, DatasetSpec.parse(planned.spec.dataset), seed=0)
    requests = protocol.feature_requests(config, ctx)
    assert requests
    distinct = {store.key(r.dataset, r.what): r for r in requests}
    single = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    assert prefetch(store, requests, single) == len(distinct)
    encoded = store.images_encoded
    assert encoded == sum(len(r.dataset) for r in distinct.values())
    protocol.run(config, ctx)
    assert store.images_encoded == encoded
    assert prefetch(store, requests, single) == 0  # all held now: nothing to encode


def _run(command: list[str], tmp: Path, name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``command`` (an eqbench CLI call) with its own cache, results and encoder log."""
    hook = tmp / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(COUNTING_HOOK)
    logs = tmp / f"{name}-encoded"
    logs.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # torchrun's default per process; the same for one process
        "ENCODED_LOG_DIR": str(logs),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    paths = ["--cache-dir", str(tmp / f"{name}-cache"), "--results-dir", str(tmp / name)]
    done = subprocess.run(
        [*command, *EVAL_ARGS, *paths], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, logs


def _metrics(results: Path) -> dict[str, Any]:
    out = {}
    for path in sorted(results.rglob("*.json")):
        record = json.loads(path.read_text())
        out[record["task"]] = record
    return out


def _encoded(logs: Path) -> dict[str, Counter[str]]:
    return {p.stem: Counter(p.read_text().split()) for p in sorted(logs.glob("rank*.txt"))}


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_encode_each_image_once(tmp_path: Path) -> None:
    _, one_logs = _run([sys.executable, "-m", "eqbench.cli"], tmp_path, "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two, two_logs = _run([*torchrun, "-m", "eqbench.cli"], tmp_path, "two")

    # results: written once, by rank 0, with bit-identical metrics
    single, sharded = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert sorted(sharded) == sorted(single) == sorted(TASKS.split(","))
    assert len(list((tmp_path / "two").rglob("*.json"))) == 3
    for task in single:
        assert sharded[task]["metrics"] == single[task]["metrics"], task
        assert sharded[task]["environment"]["world_size"] == 2
        assert "world_size" not in single[task]["environment"]
    assert two.stdout.count("Results written under") == 1

    # every image encoded exactly once, the work split over both ranks
    one_seen, two_seen = _encoded(one_logs), _encoded(two_logs)
    assert list(one_seen) == ["rank0"] and list(two_seen) == ["rank0", "rank1"]
    assert all(two_seen.values())
    assert two_seen["rank0"] + two_seen["rank1"] == one_seen["rank0"]
    assert not two_seen["rank0"] & two_seen["rank1"]

    # the cache: the same entries holding the same features, in dataset order; no temporaries
    caches = [tmp_path / "one-cache", tmp_path / "two-cache"]
    entries = [sorted(p.relative_to(c) for p in c.rglob("*") if p.is_file()) for c in caches]
    assert entries[0] == entries[1] and len(entries[0]) == 6
    assert all(p.suffix == ".safetensors" for p in entries[1])
    rows = 0
    for entry in entries[0]:
        a, b = (load_file(str(c / entry)) for c in caches)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        rows += a["cls"].shape[0]
    assert rows == sum(one_seen["rank0"].values())


def test_submit_validates_before_submitting(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["eval", "-t", "classification/knn", "-c", "baseline:pixels"]
    results = tmp_path / "results"
    args = [*base, "--results-dir", str(results), "--submit", "local"]
    bad_nodes = runner.invoke(main, [*args, "--nodes", "0"])
    assert bad_nodes.exit_code == 2 and "--nodes must be >= 1" in bad_nodes.output
    bad_gpus = runner.invoke(main, [*args, "--gpus-per-node", "-1"])
    assert bad_gpus.exit_code == 2 and "--gpus-per-node must be >= 0" in bad_gpus.output
    typo = runner.invoke(main, [*args, "--set", "n_trian=5"])
    assert typo.exit_code == 2 and "Did you mean" in typo.output
    assert not list(tmp_path.iterdir())  # nothing submitted, no folder made


@pytest.mark.slow
def test_submit_local_two_tasks_write_the_results_once(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = [
        *["eval", "-q", "-t", "classification/knn", "-c", "baseline:random:micro_vit"],
        *["--batch-size", "16", "--set", "image_size=32", "--set", "n_test=50"],
        "--results-dir",
        str(results),
        "--submit",
        "local",
        "--gpus-per-node",
        "0",
        "--tasks-per-node",
        "2",
        "--cpus-per-task",
        "1",
    ]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "Submitted job" in done.output
    records = _metrics(results)
    assert list(records) == ["classification/knn"]
    assert records["classification/knn"]["environment"]["world_size"] == 2
    assert (tmp_path / "results-slurm").is_dir()
