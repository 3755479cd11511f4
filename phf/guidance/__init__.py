"""Preference-grounded token-level guidance (Yang et al. 2023) as a token-reward plugin for phf.

* :mod:`phf.guidance.listwise`: aggregations and the Plackett-Luce loss (ties dropped), ranking agreement.
* :mod:`phf.guidance.lists`: chunks of the training stream ranked by the scorer, stratified lists.
* :mod:`phf.guidance.model`: the reward model r_phi(token | prefix) in (0, 1] (own small transformer).
* :mod:`phf.guidance.learner`: fitting with early stopping, refits, save/load.
* :mod:`phf.guidance.source`: ``reward=segment|guidance`` token-reward sources and the objective wrapper.
* :mod:`phf.guidance.localisation`: localisation AUROC (PEP8 line/column, PII character spans).
"""

from phf.guidance.learner import GuidanceLearner
from phf.guidance.lists import Item, items_from_blocks, strata, stratified_lists
from phf.guidance.listwise import AGGREGATIONS, aggregate, plackett_luce_loss, ranking_agreement
from phf.guidance.model import GuidanceModel
from phf.guidance.source import (
    GuidanceRewards,
    RewardedObjective,
    SegmentRewards,
    build_objective,
    pack_documents,
    with_token_rewards,
)

__all__ = [
    "AGGREGATIONS",
    "GuidanceLearner",
    "GuidanceModel",
    "GuidanceRewards",
    "Item",
    "RewardedObjective",
    "SegmentRewards",
    "aggregate",
    "build_objective",
    "items_from_blocks",
    "pack_documents",
    "plackett_luce_loss",
    "ranking_agreement",
    "strata",
    "stratified_lists",
    "with_token_rewards",
]
