"""A user-defined objective living outside phf: what a plugin looks like (see test_plugin.py)."""

from __future__ import annotations

from phf.objectives import LossOutput, Objective, shift_targets


class MyObjective(Objective):
    """MLE with each token's cross-entropy scaled by (1 + penalty * s_t), s_t the target's score."""

    def __init__(self, penalty: float = 1.0):
        if penalty < 0:
            raise ValueError(f"MyObjective penalty must be >= 0, got {penalty!r}")
        self.penalty = float(penalty)

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        t = shift_targets(logits, labels, token_scores)
        loss = t.mean((1.0 + self.penalty * t.scores) * t.ce)  # (B, T-1) -> scalar
        return LossOutput(loss, {"lm_loss": t.mean(t.ce).detach()})
