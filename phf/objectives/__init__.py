"""Objective registry: one method per module; Hydra's ``conf/objective/*.yaml`` selects them."""

from phf.objectives.awr import AWR
from phf.objectives.base import (
    IGNORE_INDEX,
    BaseObjective,
    LossOutput,
    Objective,
    Targets,
    sequence_logps,
    shift_targets,
)
from phf.objectives.conditional import Conditional
from phf.objectives.dpo import DPO
from phf.objectives.filtering import Filtering
from phf.objectives.guided_mle import GuidedMLE
from phf.objectives.mle import MLE
from phf.objectives.preference import PreferenceObjective
from phf.objectives.rwr import RWR
from phf.objectives.unlikelihood import Unlikelihood

__all__ = [
    "AWR",
    "BaseObjective",
    "DPO",
    "IGNORE_INDEX",
    "MLE",
    "RWR",
    "Conditional",
    "Filtering",
    "GuidedMLE",
    "LossOutput",
    "Objective",
    "PreferenceObjective",
    "Targets",
    "Unlikelihood",
    "sequence_logps",
    "shift_targets",
]
