"""A user's objective plugs in without editing phf: a YAML with `_target_` on an extra Hydra search path."""

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.testing import assert_close

from phf.entry import compose
from phf.objectives import Objective

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the repository root, so that `tests.objectives.my_objective` imports
USER_CONF = HERE / "conf"  # holds objective/my_objective.yaml


@pytest.fixture(autouse=True)
def importable_root(monkeypatch):
    """A user's package must be importable; here that package is this repository's `tests`."""
    monkeypatch.syspath_prepend(str(ROOT))


def check(obj):
    """MyObjective(penalty=2): target scores [0, 0.5] -> weights [1, 2]; CE = [log 2, log 2] (uniform V=2).
    loss = (log 2 + 2 log 2) / 2 = 1.5 log 2."""
    assert isinstance(obj, Objective) and type(obj).__name__ == "MyObjective" and obj.penalty == 2.0
    out = obj.loss(torch.zeros(1, 3, 2), torch.tensor([[0, 1, 0]]), torch.tensor([[7.0, 0.0, 0.5]]))
    assert_close(out.loss, torch.tensor(1.5 * math.log(2)))


def test_yaml_instantiates_directly():
    check(instantiate(OmegaConf.load(USER_CONF / "objective" / "my_objective.yaml")))


def test_selected_by_hydra_searchpath_override():
    """`phf-train objective=my_objective hydra.searchpath=[file:///path/to/conf]` selects the user's YAML."""
    cfg = compose(["objective=my_objective", f"hydra.searchpath=[file://{USER_CONF}]"])
    assert cfg.objective._target_ == "tests.objectives.my_objective.MyObjective"
    check(instantiate(cfg.objective))


def test_command_line_overrides_reach_the_constructor():
    cfg = compose(["objective=my_objective", "objective.penalty=0.5", f"hydra.searchpath=[file://{USER_CONF}]"])
    assert instantiate(cfg.objective).penalty == 0.5
