"""Token-weighted MLE with learned token rewards (Yang et al. 2023, objective (b); plugin B of the notes).

Designed for ``reward=guidance``: the loop then hands the objective s_t = 1 - r_phi(x_t | x_<t), and
the reward is recovered as r_t = 1 - s_t in (0, 1]. With ``reward=segment`` (PHF's broadcast scores)
r_t = 1 - s_t as well, clamped to at least ``r_min``. With t over the predicted positions N_b of
sequence b (targets not ignored) and CE_t = -log p(x_t | x_<t):

``normalize: sequence`` (the paper): weights normalised within each sequence,

    L = mean_b  sum_{t in N_b} w_t CE_t,   w_t = r_t / sum_{t' in N_b} r_t'

  Every sequence has total weight 1 (a weighted mean of its CE, on MLE's scale): r only moves
  credit between the tokens of a sequence and never down-weights a misaligned sequence as a whole.

``normalize: batch`` (phf's variant): one normaliser for the whole micro-batch,

    L = sum_{b, t in N} r_t CE_t / sum_{b, t in N} r_t  =  mean_{t in N} w_t CE_t,  w_t = r_t / mean_N(r)

  A sequence whose tokens all have low reward now loses total weight: a soft, token-localised filter.

``normalize: none``: L = mean_{t in N} r_t CE_t (raw rewards as weights; r in (0, 1] shrinks the loss).

Sequences without a predicted position are left out of the ``sequence`` mean. With gradient
accumulation the ``batch`` normaliser is per micro-batch.
"""

from __future__ import annotations

import torch

from phf.objectives.base import LossOutput, Objective, shift_targets

NORMALIZE = ("sequence", "batch", "none")


class GuidedMLE(Objective):
    """Token-weighted MLE; see the module docstring.

    Args:
        normalize: ``sequence`` (paper), ``batch`` (phf variant) or ``none``.
        r_min: lower clamp of r_t = 1 - s_t (> 0), so weights stay positive for any score scale.
    """

    def __init__(self, normalize: str = "sequence", r_min: float = 1e-6):
        if normalize not in NORMALIZE:
            raise ValueError(f"guided_mle normalize must be one of {NORMALIZE}, got {normalize!r}")
        if not r_min > 0:
            raise ValueError(f"guided_mle r_min must be > 0, got {r_min!r}")
        self.normalize = normalize
        self.r_min = float(r_min)

    def weights(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """w (B, T-1) from target scores and the predicted-position mask; 0 where masked."""
        r = (1.0 - scores).clamp(min=self.r_min) * mask
        if self.normalize == "sequence":
            n = mask.sum(-1, keepdim=True)
            return r * n / r.sum(-1, keepdim=True).clamp(min=1e-30)  # mean weight 1 within each sequence
        if self.normalize == "batch":
            return r * mask.sum() / r.sum().clamp(min=1e-30)  # mean weight 1 over the micro-batch
        return r

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        t = shift_targets(logits, labels, token_scores)
        w = self.weights(t.scores, t.mask)  # no gradient: scores carry none
        if self.normalize == "sequence":
            n = t.mask.sum(-1)
            per_seq = (w * t.ce).sum(-1) / n.clamp(min=1.0)  # = sum_t (r_t / sum r) CE_t
            has = (n > 0).to(per_seq.dtype)
            loss = (per_seq * has).sum() / has.sum().clamp(min=1.0)
        else:
            loss = t.mean(w * t.ce)
        metrics = {
            "lm_loss": t.mean(t.ce),
            "weighted_lm_loss": loss,
            "weight_mean": t.mean(w),
            "weight_min": torch.where(t.mask > 0, w, torch.full_like(w, float("inf"))).min(),
            "weight_max": (w * t.mask).max(),
        }
        return LossOutput(loss, {k: x.detach() for k, x in metrics.items()})
