"""Result records: one JSON file per task run, append-only, written atomically.

Layout: ``RESULTS/<model>/<task>/<dataset>-seed<N>-<UTC time>-<id>.json`` (``/`` in names
becomes ``__``, ``:`` becomes ``_``). Leaderboards and tables are generated from these files.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from eqbench.atomic import write_json
from eqbench.errors import EqbenchError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

REQUIRED = (
    "schema_version",
    "task",
    "task_version",
    "model_id",
    "checkpoint_sha256",
    "dataset",
    "metrics",
    "primary_metric",
    "seed",
)


@dataclass
class ResultRecord:
    """What one task run produced and everything needed to reproduce it."""

    task: str
    task_version: int
    protocol: str
    model_id: str
    checkpoint: str
    checkpoint_sha256: str
    dataset: str
    dataset_fingerprint: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    primary_metric: str
    higher_is_better: bool
    seed: int
    probe_seeds: list[int]
    config: dict[str, Any]
    overrides: dict[str, Any]
    environment: dict[str, Any]
    wall_time_s: float
    #: what eqbench changed for the model, e.g. ``image_size`` snapped to the patch size
    adjustments: dict[str, Any] = field(default_factory=dict)
    #: where the weights came from: ``random init (seed 0)``, ``hf-hub:REPO/FILE@REVISION`` (the
    #: cached file a pretrained name resolved to), a weights path; ``None`` for checkpoints
    weights: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def primary(self) -> dict[str, Any]:
        return self.metrics[self.primary_metric]


def summarise(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of a metric's per-seed values (std with ddof 0)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "values": [float(v) for v in arr]}


def slug(text: str) -> str:
    """A file-name-safe form of a model, task or dataset name.

    Never empty and never starting with ``.``: a name such as ``..`` (a checkpoint header's
    ``name`` is anyone's choice) stays one folder level under the results folder.
    """
    text = text.replace("/", "__").replace(":", "_")
    text = re.sub(r"[^A-Za-z0-9_.+-]", "-", text)
    text = re.sub(r"^\.+", lambda m: "_" * len(m.group()), text)
    return text[:200] or "_"


def write_result(record: ResultRecord, results_dir: Path) -> Path:
    """Write ``record`` atomically under ``results_dir`` and return its path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{slug(record.dataset)}-seed{record.seed}-{stamp}-{uuid.uuid4().hex[:6]}.json"
    path = results_dir / slug(record.model_id) / slug(record.task) / name
    write_json(path, record.to_json())
    return path


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every valid result JSON under ``results_dir`` (invalid files are skipped with a warning)."""
    if not results_dir.exists():
        raise EqbenchError(
            f"Results folder '{results_dir}' does not exist. Run `eqbench eval` first or pass "
            "--results-dir."
        )
    out = []
    for path in sorted(results_dir.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
            log.warning("skipping unreadable result %s (%s)", path, exc)
            continue
        problem = record_problem(data)
        if problem is not None:
            log.warning("skipping %s: not an eqbench result (%s)", path, problem)
            continue
        if data["schema_version"] > SCHEMA_VERSION:
            log.warning(
                "skipping %s: schema %s is newer than this eqbench", path, data["schema_version"]
            )
            continue
        data["_path"] = str(path)
        out.append(data)
    return out


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "task": str,
    "task_version": int,
    "model_id": str,
    "checkpoint_sha256": str,
    "dataset": str,
    "metrics": dict,
    "primary_metric": str,
    "seed": int,
}


_OPTIONAL_TYPES: dict[str, type] = {
    "higher_is_better": bool,
    "created_at": str,
    "overrides": dict,
    "config": dict,
}


def record_problem(data: Any) -> str | None:
    """What makes ``data`` not a result record the leaderboards can read, or ``None``."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key in REQUIRED:
        if key not in data:
            return f"no '{key}'"
        expected = _FIELD_TYPES.get(key)
        value = data[key]
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            return f"'{key}' has the wrong type"
    for key, expected in _OPTIONAL_TYPES.items():
        if key in data and not isinstance(data[key], expected):
            return f"'{key}' has the wrong type"
    for name, metric in data["metrics"].items():
        if not isinstance(metric, dict) or not all(
            isinstance(metric.get(k), int | float) and not isinstance(metric.get(k), bool)
            for k in ("mean", "std")
        ):
            return f"metric '{name}' lacks a numeric mean and std"
    if data["primary_metric"] not in data["metrics"]:
        return f"no value of the primary metric '{data['primary_metric']}'"
    return None
