"""Advantage-weighted regression: RWR with a learned value baseline.

Korbak et al. 2023, §2 ("AWR"; Peng et al. 2019), in the single-step token-level form. A value head
V = -sigmoid(w . h) (w zero-initialised, no bias, on the final hidden state h; built by the model
because ``needs_value_head``) predicts, at each position, the reward of the next token. With t
indexing predicted positions (V_t = values[:, t], r_t = -token_scores[:, t+1]):

    A_t = r_t - stopgrad(V_t)
    w_t = min(exp(A_t / beta), clip_weight_max)
    L   = alpha * mean_{t in N} w_t * CE_t  +  (1 - alpha) * mean_{t in N} (r_t - V_t)^2
"""

from __future__ import annotations

import torch

from phf.objectives.base import LossOutput, Objective, shift_targets
from phf.objectives.rwr import exp_weights


def masked_pearson(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of x and y over the positions where mask is 1; 0 if either is constant."""
    n = mask.sum().clamp(min=1.0)
    dx = (x - (x * mask).sum() / n) * mask
    dy = (y - (y * mask).sum() / n) * mask
    denom = (dx.square().sum() * dy.square().sum()).sqrt()
    # the value head is constant (-0.5) at init: report 0 rather than NaN
    return torch.where(denom > 0, (dx * dy).sum() / denom.clamp(min=1e-30), torch.zeros_like(denom))


class AWR(Objective):
    """Token-level AWR with a value head trained alongside the language model.

    Args:
        alpha: weight in [0, 1] of the weighted LM loss; 1 - alpha weighs the value loss
            (toxicity 0.5, pii 0.5, pep8 0.05).
        beta: temperature > 0 (toxicity 10, pii 0.1, pep8 1).
        clip_weight_max: upper bound > 0 of a token's weight.
    """

    needs_value_head = True

    def __init__(self, alpha: float, beta: float, clip_weight_max: float = 1000.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"AWR alpha must be in [0, 1], got {alpha!r}")
        if not beta > 0:
            raise ValueError(f"AWR beta must be > 0, got {beta!r}")
        if not clip_weight_max > 0:
            raise ValueError(f"AWR clip_weight_max must be > 0, got {clip_weight_max!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.clip_weight_max = float(clip_weight_max)

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        if values is None:
            raise ValueError(
                "AWR needs the value head's output: build the model with a value head "
                "(objective.needs_value_head is True) and pass values=(B, T) to loss()"
            )
        if values.shape != labels.shape:
            raise ValueError(
                f"AWR values must be (B, T) like labels {tuple(labels.shape)}, got {tuple(values.shape)}"
            )
        t = shift_targets(logits, labels, token_scores, values)
        rewards, v = t.rewards, t.values  # (B, T-1) each
        advantages = rewards - v.detach()  # (B, T-1); stopgrad: the LM term does not train V
        weights = exp_weights(advantages, self.beta, self.clip_weight_max)  # (B, T-1)
        weighted_lm = t.mean(weights * t.ce)
        value_loss = t.mean((rewards - v).square())
        loss = self.alpha * weighted_lm + (1.0 - self.alpha) * value_loss
        metrics = {
            "lm_loss": t.mean(t.ce),
            "weighted_lm_loss": weighted_lm,
            "value_loss": value_loss,
            "weight_mean": t.mean(weights),
            "advantage_mean": t.mean(advantages),
            "value_mean": t.mean(v),
            "value_reward_corr": masked_pearson(v.detach(), rewards, t.mask),
        }
        return LossOutput(loss, {k: x.detach() for k, x in metrics.items()},
                          histograms={"weight": weights.detach(), "value": v.detach(), "advantage": advantages},
                          histogram_mask=t.mask)
