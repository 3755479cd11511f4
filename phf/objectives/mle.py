"""Maximum likelihood: the baseline every PHF objective is compared against.

L = mean_{t in N} CE_t,  CE_t = -log p_theta(x_t | x_<t)   (Korbak et al. 2023, eq. 1)
"""

from __future__ import annotations

from phf.objectives.base import LossOutput, Objective, shift_targets


class MLE(Objective):
    """Plain next-token cross-entropy over every predicted position."""

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        t = shift_targets(logits, labels, token_scores, values)
        loss = t.mean(t.ce)
        return LossOutput(loss, {"lm_loss": loss.detach()})
