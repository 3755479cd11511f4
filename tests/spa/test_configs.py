"""The SPA configs compose, and every key of spa.train / spa.sampling is one the code knows."""

import pytest
from hydra.utils import instantiate

from phf.objectives.dpo import DPO
from phf.spa.pairs import LABELERS, GenerationSettings
from phf.spa.train_dpo import DPOSettings
from tests.conftest import compose


@pytest.mark.parametrize("experiment", ["spa_pep8", "spa_pep8_scorer"])
def test_spa_experiments_compose(experiment, tmp_path):
    cfg = compose([f"+experiment={experiment}", f"run_dir={tmp_path}", "spa.init_from=x"])
    obj = instantiate(cfg.objective)
    assert isinstance(obj, DPO) and obj.beta == 0.1 and obj.refine_alpha == 0.1 and obj.warmup_frac == 0.2
    DPOSettings.from_config(cfg.spa.train)
    GenerationSettings(**cfg.spa.sampling)
    stages = cfg.spa.stages
    assert list(stages) == ["seed", "round1", "round2"] and all(s.labeler in LABELERS for s in stages.values())
    n = [s.num_prompts for s in stages.values()]
    if experiment == "spa_pep8":
        assert [s.labeler for s in stages.values()] == ["scorer", "implicit", "implicit"]
        assert n[0] / sum(n) == pytest.approx(0.05)  # the scorer labels a 5% seed
    else:
        assert all(s.labeler == "scorer" for s in stages.values())


def test_unknown_train_key_is_an_error():
    with pytest.raises(ValueError, match="unknown spa.train keys"):
        DPOSettings.from_config({"learning_rate": 1e-4})
    with pytest.raises(ValueError, match="multiple"):
        DPOSettings.from_config({"batch_size": 3, "effective_batch_size": 4})
