"""Every conf/objective/*.yaml composes with every task and instantiates with the paper's per-task values.

Expected values: Korbak et al. 2023 configs (phf_paper.md §2.7). They live in conf/task/<task>.yaml under
`objectives:`; the objective YAMLs interpolate them.
"""


import pytest
from hydra.utils import instantiate

from phf.entry import compose
from phf.objectives import Objective, PreferenceObjective
from tests.conftest import CONF

OBJECTIVES = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))
TASKS = ["toxicity", "pii", "pep8"]

# constructor attributes expected per (task, objective); objectives absent here take no task values
PAPER = {
    "toxicity": {
        "filtering": {"threshold": 0.00078, "percentile": None},
        "conditional": {"threshold": 0.00056, "drop_token_fraction": 0.01, "ban_aligned": True},
        "unlikelihood": {"threshold": 0.00078, "alpha": 1.0, "soft": False},
        "rwr": {"beta": 10.0, "clip_weight_max": 1000.0},
        "awr": {"alpha": 0.5, "beta": 10.0, "clip_weight_max": 1000.0},
    },
    "pii": {
        "filtering": {"threshold": 0.000286, "percentile": None},
        "conditional": {"threshold": 0.0, "drop_token_fraction": 0.01, "ban_aligned": True},
        "unlikelihood": {"threshold": 0.0, "alpha": 1.0, "soft": False},
        "rwr": {"beta": 10.0, "clip_weight_max": 1000.0},
        "awr": {"alpha": 0.5, "beta": 0.1, "clip_weight_max": 1000.0},
    },
    "pep8": {
        "filtering": {"threshold": 0.002361, "percentile": None},
        "conditional": {"threshold": 0.0, "drop_token_fraction": 0.1, "ban_aligned": False},
        "unlikelihood": {"threshold": 0.0, "alpha": 0.01, "soft": False},
        "rwr": {"beta": 10.0, "clip_weight_max": 1000.0},
        "awr": {"alpha": 0.05, "beta": 1.0, "clip_weight_max": 1000.0},
    },
}


def compose_objective(*overrides):
    cfg = compose(overrides)
    return cfg, instantiate(cfg.objective)


def test_registry_has_the_six_paper_objectives():
    assert {"mle", "filtering", "conditional", "unlikelihood", "rwr", "awr"} <= set(OBJECTIVES)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_composes_and_instantiates(task, name):
    cfg, obj = compose_objective(f"task={task}", f"objective={name}")
    # a token objective (phf-train) or a preference objective (phf-spa, e.g. dpo), never both
    assert isinstance(obj, Objective) != isinstance(obj, PreferenceObjective)
    # naming symmetry: conf/objective/<name>.yaml -> phf/objectives/<name>.py
    assert type(obj).__module__ == f"phf.objectives.{name}"
    for key, value in PAPER[task].get(name, {}).items():
        assert getattr(obj, key) == value, f"task={task} objective={name}: {key}"
    assert obj.needs_value_head == (name == "awr")


@pytest.mark.parametrize("task", TASKS)
def test_conditional_sampling_settings_follow_the_task(task):
    _, obj = compose_objective(f"task={task}", "objective=conditional")
    assert obj.special_tokens == ["<|aligned|>", "<|misaligned|>"]
    assert obj.generation_prefix == ["<|aligned|>"]
    assert obj.banned_tokens == (["<|misaligned|>"] if task == "pep8" else ["<|aligned|>", "<|misaligned|>"])


def test_filtering_percentile_from_the_command_line():
    _, obj = compose_objective("objective=filtering", "objective.threshold=null", "objective.percentile=50")
    assert obj.threshold is None and obj.percentile == 50.0


def test_unlikelihood_soft_reproduces_the_original_from_the_command_line():
    _, obj = compose_objective("task=pep8", "objective=unlikelihood", "objective.soft=true")
    assert obj.soft and obj.alpha == 0.01
