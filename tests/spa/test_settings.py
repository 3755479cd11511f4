"""SpaSettings: the spa group bound once from its _target_, every key named when it is not one."""

from __future__ import annotations

import pytest

from phf.entry import compose
from phf.spa.guards import StageAcceptance
from phf.spa.informative import PairSearch
from phf.spa.settings import PromptSettings, SpaSettings


def test_the_spa_group_binds_to_typed_settings():
    cfg = compose(["+experiment=spa_pii_guarded", "run_dir=x", "spa.init_from=m", "spa.pairs.max_tries=3"])
    s = SpaSettings.from_config(cfg.spa)
    assert s.init_from == "m" and s.pairs == PairSearch(max_tries=3, min_margin=0.0)
    assert isinstance(s.prompts, PromptSettings) and isinstance(s.guards.accept, StageAcceptance)
    assert s.guards.accept.enabled and list(s.stages) == ["seed", "round1", "round2"]
    assert isinstance(s.sampling, dict) and s.sampling["num_responses"] == 2


@pytest.mark.parametrize(("override", "where"), [
    ("+spa.orcale=true", r"spa: unknown keys \['orcale'\]"),
    ("+spa.guards.accept.min_distinct2=0.1", r"spa\.guards\.accept: unknown keys \['min_distinct2'\]"),
    ("+spa.prompts.max_doc=3", r"spa\.prompts: unknown keys \['max_doc'\]"),
])
def test_an_unknown_spa_key_is_named_with_where_it_was_found(override, where):
    cfg = compose(["+experiment=spa_pep8", "run_dir=x", "spa.init_from=m", override])
    with pytest.raises(ValueError, match=where):
        SpaSettings.from_config(cfg.spa)
