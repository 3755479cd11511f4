"""``phf.settings.bind``: the one config-to-dataclass binder (Trainer, task.eval, spa.train use it)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import MISSING, OmegaConf

from phf.settings import bind


@dataclass
class Knobs:
    size: int
    rate: float = 0.5
    names: list | None = None


@dataclass
class MoreKnobs(Knobs):
    extra: int = 0


def test_binds_resolved_plain_values_and_drops_hydra_keys():
    root = OmegaConf.create({"n": 3, "knobs": {"size": "${n}", "names": ["a"]}})
    k = bind(Knobs, root.knobs, "knobs")
    assert k == Knobs(size=3, names=["a"]) and type(k.names) is list
    assert bind(Knobs, {"size": 1}, "knobs", rate=2.0) == Knobs(size=1, rate=2.0)  # values win over the node
    assert bind(Knobs, {"_target_": f"{__name__}.Knobs", "_convert_": "all", "size": 2}, "knobs") == Knobs(2)


def test_target_names_the_class_or_a_subclass():
    assert bind(Knobs, {"_target_": f"{__name__}.MoreKnobs", "size": 1, "extra": 7}, "k") == MoreKnobs(1, extra=7)
    with pytest.raises(ValueError, match=r"k._target_ must name .*Knobs .*got 'collections.OrderedDict'"):
        bind(Knobs, {"_target_": "collections.OrderedDict", "size": 1}, "k")
    with pytest.raises(ValueError, match=r"k._target_: cannot import 'no_such_module.X'"):
        bind(Knobs, {"_target_": "no_such_module.X", "size": 1}, "k")


def test_unknown_and_missing_keys_are_named_with_where():
    with pytest.raises(ValueError, match=r"task.x: unknown keys \['sise'\]; known: \['names', 'rate', 'size'\]"):
        bind(Knobs, {"sise": 1}, "task.x")
    with pytest.raises(ValueError, match=r"task.x: .*missing 1 required positional argument: 'size'"):
        bind(Knobs, {}, "task.x")


def test_keep_missing_passes_unset_values_on():
    node = OmegaConf.create({"size": "???"})
    assert bind(Knobs, node, "k", keep_missing=True).size == MISSING
    with pytest.raises(Exception, match="size"):
        bind(Knobs, node, "k")
