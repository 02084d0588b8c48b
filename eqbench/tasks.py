"""Task files: versioned, validated YAML under ``tasks/`` (after lm-evaluation-harness).

A task file names its protocol, default dataset, primary metric and protocol options::

    task: synthetic/rotation
    version: 1
    protocol: transform_prediction
    dataset: photos
    primary_metric: r2_mlp
    higher_is_better: true
    description: ...
    config: {transformation: rotation, ...}

``include: _base.yaml`` merges a template first (keys of the including file win; ``config`` is
merged key by key). Files whose name starts with ``_`` are templates, not tasks. Groups live in
``tasks/groups/*.yaml`` as ``group: NAME`` plus a list of task or group names.

Bump ``version`` whenever a change can move a task's numbers: leaderboards never mix versions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from eqbench.errors import ConfigError, EqbenchError
from eqbench.registry import did_you_mean
from eqbench.resources import shipped_dir
from eqbench.yamlfiles import read_with_includes, read_yaml

TASK_KEYS = (
    "task",
    "version",
    "protocol",
    "dataset",
    "primary_metric",
    "higher_is_better",
    "description",
    "config",
    "include",
)


@dataclass(frozen=True)
class TaskSpec:
    """One task, as loaded and validated from its file."""

    name: str
    version: int
    protocol: str
    dataset: str
    primary_metric: str
    higher_is_better: bool
    description: str
    config: dict[str, Any] = field(default_factory=dict)
    path: str = ""


@dataclass(frozen=True)
class GroupSpec:
    """A named list of tasks and groups."""

    name: str
    description: str
    members: tuple[str, ...]


def tasks_dir() -> Path:
    """The task-file folder: ``$EQBENCH_TASKS_DIR``, or the shipped ``tasks/``
    (:func:`eqbench.resources.shipped_dir`: the installed copy or the checkout's)."""
    env = os.environ.get("EQBENCH_TASKS_DIR")
    path = Path(env) if env else shipped_dir("tasks")
    if not path.is_dir():
        raise EqbenchError(
            f"Task folder '{path}' not found. Set EQBENCH_TASKS_DIR to a tasks/ folder, or unset "
            "it to use the tasks eqbench ships."
        )
    return path


def parse_task(path: Path, root: Path) -> TaskSpec:
    """Load and validate one task file."""
    data = read_with_includes(path, "Task file", root=root)
    for key in data:
        if key not in TASK_KEYS:
            hint = did_you_mean(key, list(TASK_KEYS))
            raise ConfigError(f"Task file '{path}': unknown key '{key}'.{hint}")
    required = ("task", "version", "protocol", "dataset", "primary_metric")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"Task file '{path}': missing key(s) {', '.join(missing)}.")
    name = data["task"]
    expected = path.relative_to(root).with_suffix("").as_posix()
    if name != expected:
        raise ConfigError(
            f"Task file '{path}' declares task '{name}' but its path says '{expected}'. "
            "Rename one so they agree."
        )
    version = data["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"Task file '{path}': version must be a positive integer.")
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"Task file '{path}': config must be a mapping.")
    higher = data.get("higher_is_better", True)
    if not isinstance(higher, bool):
        raise ConfigError(f"Task file '{path}': higher_is_better must be true or false.")
    return TaskSpec(
        name=name,
        version=version,
        protocol=str(data["protocol"]),
        dataset=str(data["dataset"]),
        primary_metric=str(data["primary_metric"]),
        higher_is_better=higher,
        description=str(data.get("description", "")).strip(),
        config=config,
        path=str(path),
    )


@lru_cache(maxsize=4)
def _load_all(root: Path) -> tuple[dict[str, TaskSpec], dict[str, GroupSpec]]:
    tasks: dict[str, TaskSpec] = {}
    groups: dict[str, GroupSpec] = {}
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if path.name.startswith("_"):
            continue
        if rel.parts[0] == "groups":
            data = read_yaml(path, "Group file")
            members = data.get("tasks")
            if "group" not in data or not isinstance(members, list):
                raise ConfigError(
                    f"Group file '{path}' needs 'group: NAME' and 'tasks: [..]'. Fix the file."
                )
            groups[str(data["group"])] = GroupSpec(
                name=str(data["group"]),
                description=str(data.get("description", "")).strip(),
                members=tuple(str(m) for m in members),
            )
            continue
        spec = parse_task(path, root)
        tasks[spec.name] = spec
    for group in groups.values():
        for member in group.members:
            if member not in tasks and member not in groups:
                hint = did_you_mean(member, list(tasks) + list(groups))
                raise ConfigError(f"Group '{group.name}' names unknown task '{member}'.{hint}")
    return tasks, groups


def all_tasks(root: Path | None = None) -> dict[str, TaskSpec]:
    """Every task, by name."""
    return _load_all(root or tasks_dir())[0]


def all_groups(root: Path | None = None) -> dict[str, GroupSpec]:
    """Every group, by name."""
    return _load_all(root or tasks_dir())[1]


def resolve_tasks(selection: str, root: Path | None = None) -> list[TaskSpec]:
    """Expand ``"T1,T2,GROUP"`` into task specs, in order, without duplicates."""
    tasks, groups = _load_all(root or tasks_dir())
    out: list[TaskSpec] = []

    def add(name: str, stack: tuple[str, ...]) -> None:
        if name in tasks:
            if tasks[name] not in out:
                out.append(tasks[name])
        elif name in groups:
            if name in stack:
                raise ConfigError(f"Group '{name}' includes itself.")
            for member in groups[name].members:
                add(member, (*stack, name))
        else:
            hint = did_you_mean(name, list(tasks) + list(groups))
            raise ConfigError(
                f"Unknown task '{name}'.{hint} Run `eqbench ls tasks` or `eqbench ls groups`."
            )

    names = [s.strip() for s in selection.split(",") if s.strip()]
    if not names:
        raise EqbenchError("No task given. Use --task NAME[,NAME|GROUP]; see `eqbench ls tasks`.")
    for name in names:
        add(name, ())
    return out
