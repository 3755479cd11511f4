"""Reward-weighted regression: MLE with every token weighted by its exponentiated reward.

Korbak et al. 2023, §2 ("RWR"; Peters & Schaal 2007), in the single-step token-level form. With the
reward r_t = -s_t of the target token:

    w_t = min(exp(r_t / beta), clip_weight_max)
    L   = mean_{t in N} w_t * CE_t

Deviation from the original code: it ran RWR as AWR with alpha = 1, whose value head then gets no
gradient and stays at its zero init, so it silently subtracted a constant baseline V = -0.5:
w_t = exp((r_t + 0.5) / beta), i.e. exact RWR times e^{0.5/beta} (x1.051 for beta = 10, a 5% larger
effective learning rate). This is exact RWR: no value head, no baseline.
"""

from __future__ import annotations

import math

import torch

from phf.objectives.base import LossOutput, Objective, shift_targets


def exp_weights(x: torch.Tensor, beta: float, clip_weight_max: float) -> torch.Tensor:
    """min(exp(x / beta), clip_weight_max), clamped in log space so it never overflows to inf."""
    return torch.exp((x / beta).clamp(max=math.log(clip_weight_max)))


class RWR(Objective):
    """Token-level RWR; needs no value head.

    Args:
        beta: temperature > 0 (10 for all three tasks in the paper).
        clip_weight_max: upper bound > 0 of a token's weight.
    """

    def __init__(self, beta: float, clip_weight_max: float = 1000.0):
        if not beta > 0:
            raise ValueError(f"RWR beta must be > 0, got {beta!r}")
        if not clip_weight_max > 0:
            raise ValueError(f"RWR clip_weight_max must be > 0, got {clip_weight_max!r}")
        self.beta = float(beta)
        self.clip_weight_max = float(clip_weight_max)

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        t = shift_targets(logits, labels, token_scores)
        weights = exp_weights(t.rewards, self.beta, self.clip_weight_max)  # (B, T-1), no gradient
        loss = t.mean(weights * t.ce)
        metrics = {
            "lm_loss": t.mean(t.ce),
            "weighted_lm_loss": loss,
            "weight_mean": t.mean(weights),
        }
        return LossOutput(loss, {k: x.detach() for k, x in metrics.items()},
                          histograms={"weight": weights.detach()}, histogram_mask=t.mask)
