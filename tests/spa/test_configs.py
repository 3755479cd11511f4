"""The SPA configs compose, and every key of spa.train / spa.sampling is one the code knows."""

import pytest
from hydra.utils import instantiate

from phf.objectives.dpo import DPO
from phf.spa.pairs import LABELERS, GenerationSettings
from phf.spa.train_dpo import DPOSettings
from tests.conftest import compose


@pytest.mark.parametrize("experiment", ["spa_pep8", "spa_pep8_scorer", "spa_pii"])
def test_spa_experiments_compose(experiment, tmp_path):
    cfg = compose([f"+experiment={experiment}", f"run_dir={tmp_path}", "spa.init_from=x"])
    obj = instantiate(cfg.objective)
    assert isinstance(obj, DPO) and obj.beta == 0.1 and obj.refine_alpha == 0.1 and obj.warmup_frac == 0.2
    DPOSettings.from_config(cfg.spa.train)
    GenerationSettings(**cfg.spa.sampling)
    stages = cfg.spa.stages
    assert list(stages) == ["seed", "round1", "round2"] and all(s.labeler in LABELERS for s in stages.values())
    n = [s.num_prompts for s in stages.values()]
    if experiment in ("spa_pep8", "spa_pii"):
        assert [s.labeler for s in stages.values()] == ["scorer", "implicit", "implicit"]
        assert n[0] / sum(n) == pytest.approx(0.05)  # the scorer labels a 5% seed
    else:
        assert all(s.labeler == "scorer" for s in stages.values())


def test_unknown_train_key_is_an_error():
    with pytest.raises(ValueError, match=r"spa.train: unknown keys"):
        DPOSettings.from_config({"learning_rate": 1e-4})
    with pytest.raises(ValueError, match="multiple"):
        DPOSettings.from_config({"batch_size": 3, "effective_batch_size": 4})


def test_spa_pii_is_evaluated_like_the_laptop_pii_sweep(tmp_path):
    """SPA's row sits in the laptop PII table only if data, tokenizer, model and evaluation are the sweep's."""
    from omegaconf import OmegaConf

    spa = compose(["+experiment=spa_pii", f"run_dir={tmp_path}", "spa.init_from=x"])
    sweep = compose(["+experiment=laptop_pii", "objective=conditional", f"run_dir={tmp_path}"])
    for key in ("data", "tokenizer", "model", "task"):
        assert OmegaConf.to_container(spa[key]) == OmegaConf.to_container(sweep[key]), key
    assert spa.spa.score_prompt is False  # the eval's unconditional scenario scores the response only
    assert spa.spa.prompts.mix.signatures == 0  # nothing to mine in prose


@pytest.mark.parametrize("arm", ["spa_pii_guarded", "spa_pii_guarded_oracle", "spa_pii_guarded_hybrid"])
def test_guarded_pii_arms_compose_and_differ_only_in_labels(arm, tmp_path):
    """The issue-30 arms: same stages, guards and evaluation as each other (and as spa_pii); only who labels
    differs. Every guard key binds to the code's settings (an unknown key would raise)."""
    from omegaconf import OmegaConf

    from phf.settings import bind
    from phf.spa.guards import StageAcceptance
    from phf.spa.informative import PairSearch
    from phf.spa.oracle import oracle_stages

    cfg = compose([f"+experiment={arm}", f"run_dir={tmp_path}", "spa.init_from=x"])
    base = compose(["+experiment=spa_pii_guarded", f"run_dir={tmp_path}", "spa.init_from=x"])
    plain = compose(["+experiment=spa_pii", f"run_dir={tmp_path}", "spa.init_from=x"])
    obj = instantiate(cfg.objective)
    assert obj.nll_weight == 1.0 and obj.dnd_lambda == [0.0, 0.5, 0.25] and obj.refine_alpha == 0.1
    assert bind(PairSearch, cfg.spa.pairs, "spa.pairs").max_tries == 8
    assert bind(StageAcceptance, cfg.spa.guards.accept, "spa.guards.accept").enabled
    for key in ("data", "tokenizer", "model", "task"):
        assert OmegaConf.to_container(cfg[key]) == OmegaConf.to_container(plain[key]), key
    stages = oracle_stages(OmegaConf.to_container(cfg.spa.stages), cfg.spa.oracle)
    labels = [(s["labeler"], s.get("seed_fraction")) for s in stages.values()]
    assert [s["num_prompts"] for s in stages.values()] == [s.num_prompts for s in base.spa.stages.values()]
    assert labels == {"spa_pii_guarded": [("scorer", None), ("implicit", None), ("implicit", None)],
                      "spa_pii_guarded_oracle": [("scorer", None)] * 3,
                      "spa_pii_guarded_hybrid": [("scorer", None), ("hybrid", 0.1), ("hybrid", 0.1)]}[arm]
    with pytest.raises(ValueError, match="spa.pairs: unknown keys"):
        bind(PairSearch, {"tries": 3}, "spa.pairs")
