"""Registry lookups with did-you-mean, and typed configs built from dicts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from eqbench.dataclass_dicts import from_dict, to_dict
from eqbench.errors import ConfigError, EqbenchError
from eqbench.overrides import parse_overrides
from eqbench.registry import Registry, did_you_mean


def test_registry_register_get_and_did_you_mean() -> None:
    reg: Registry[int] = Registry("widget", "eqbench ls widgets")
    reg.register("rotation")(1)
    reg.register("colour")(2)
    assert reg.get("colour") == 2
    assert reg.names() == ["colour", "rotation"]
    with pytest.raises(EqbenchError, match=r"Unknown widget 'rotaton'\. Did you mean 'rotation'\?"):
        reg.get("rotaton")
    with pytest.raises(EqbenchError, match="eqbench ls widgets"):
        reg.get("zzzzzz")
    with pytest.raises(ValueError, match="twice"):
        reg.register("colour")(3)


def test_did_you_mean_matches_last_path_component() -> None:
    assert "synthetic/rotation" in did_you_mean("rotaton", ["synthetic/rotation", "knn"])
    assert did_you_mean("qqqq", ["synthetic/rotation"]) == ""


@dataclass(frozen=True)
class _Cfg:
    n: int
    lr: float = 0.1
    name: str = "x"
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    maybe: int | None = None


def test_from_dict_validates_and_coerces() -> None:
    cfg = from_dict(_Cfg, {"n": 3, "lr": 1, "sizes": [4]}, "test")
    assert cfg == _Cfg(n=3, lr=1.0, sizes=[4])
    assert isinstance(cfg.lr, float)
    assert to_dict(cfg)["sizes"] == [4]
    with pytest.raises(ConfigError, match=r"unknown option 'lrr'\. Did you mean 'lr'\?"):
        from_dict(_Cfg, {"n": 1, "lrr": 2}, "test")
    with pytest.raises(ConfigError, match="must be an integer"):
        from_dict(_Cfg, {"n": "3"}, "test")
    with pytest.raises(ConfigError, match="must be an integer"):
        from_dict(_Cfg, {"n": True}, "test")
    with pytest.raises(ConfigError, match="missing required option"):
        from_dict(_Cfg, {}, "test")
    assert from_dict(_Cfg, {"n": 1, "maybe": None}, "t").maybe is None
    assert from_dict(_Cfg, {"n": 1, "maybe": 5}, "t").maybe == 5


def test_parse_overrides_reads_yaml_values() -> None:
    assert parse_overrides(["n_train=2000", "ks=[10, 20]", "feature=avgpool"]) == {
        "n_train": 2000,
        "ks": [10, 20],
        "feature": "avgpool",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["oops"])
