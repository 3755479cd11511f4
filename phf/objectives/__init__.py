"""Objective registry: one method per module; Hydra's ``conf/objective/*.yaml`` selects them."""

from phf.objectives.base import IGNORE_INDEX, LossOutput, Objective, Targets, shift_targets
from phf.objectives.mle import MLE

__all__ = ["IGNORE_INDEX", "LossOutput", "MLE", "Objective", "Targets", "shift_targets"]
