"""EvalSetup: what an evaluation takes from a run's config, built once by the entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from phf.data.segment import LineSegmenter, SentenceSegmenter
from phf.eval.settings import EvalSetup, Evaluation
from tests.conftest import TINY, compose


def test_eval_setup_holds_the_typed_settings_and_what_they_take_from_other_groups(tmp_path):
    cfg = compose([*TINY, "run_dir=x", f"cache_dir={tmp_path}", "task.eval.kl.train_reference=true"])
    setup = EvalSetup.from_config(cfg)
    assert setup.settings == Evaluation.from_config(cfg)
    assert setup.scorer == cfg.scorer  # pep8's task.eval.scorer is null: the training scorer evaluates
    assert isinstance(setup.segmenter, LineSegmenter)  # task.segmenter, built
    assert setup.kl_cache_dir == tmp_path / "kl"
    assert callable(setup.train_reference)  # trained (and cached) on the first evaluation, not here

    pii = EvalSetup.from_config(compose(["task=pii", "data=local_pii", "run_dir=x", "cache_dir=null",
                                         "task.eval.kl.cache_dir=/kl"]))
    assert isinstance(pii.segmenter, SentenceSegmenter)
    assert pii.kl_cache_dir == "/kl" and pii.train_reference is None  # an explicit cache; no reference to train
    assert EvalSetup.from_config(compose([*TINY, "run_dir=x"])).kl_cache_dir == Path("~/.cache/phf").expanduser() / "kl"


def test_eval_setup_names_a_bad_key_once_at_the_entry_point():
    with pytest.raises(ValueError, match=r"task\.eval: unknown keys \['temprature'\]"):
        EvalSetup.from_config(compose([*TINY, "run_dir=x", "+task.eval.temprature=1.0"]))


def test_a_scenario_set_to_null_is_switched_off_as_if_deleted():
    """A config file cannot delete a key its task defines (``~key`` is command-line only), so null = off:
    conf/experiment/guidance_pep8.yaml drops the red-team scenario this way."""
    deleted = Evaluation.from_config(compose([*TINY, "run_dir=x", "~task.eval.scenarios.red_team_prompts"]))
    nulled = Evaluation.from_config(compose([*TINY, "run_dir=x", "task.eval.scenarios.red_team_prompts=null"]))
    assert "red_team_prompts" not in nulled.scenarios and nulled == deleted
    assert "red_team_prompts" in Evaluation.from_config(compose([*TINY, "run_dir=x"])).scenarios
