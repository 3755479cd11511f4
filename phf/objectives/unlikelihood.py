"""Unlikelihood training: likelihood on aligned tokens, unlikelihood on misaligned ones.

Korbak et al. 2023, §2 ("Unlikelihood"; Welleck et al. 2019). With a_t = 1[s_t <= threshold]
(s_t the score of the target token) and p_t = p_theta(x_t | x_<t):

    L = mean_{t in N} [ a_t * CE_t  -  alpha * (1 - a_t) * log(max(1 - p_t, 1e-20)) ]

``soft=True`` uses a_t = 1 - s_t instead (scores in [0, 1]), mixing both terms on every token.

Deviation from the original code: there ``a_t`` became the soft weight whenever the threshold was
falsy, so the paper's pii and pep8 configs (threshold 0) silently trained with soft weights, i.e.
MLE plus a tiny unlikelihood term. Here threshold 0 means what it says (any misalignment gets the
unlikelihood term); pass ``soft=True`` to reproduce the original runs.
"""

from __future__ import annotations

import torch

from phf.objectives.base import LossOutput, Objective, shift_targets

#: floor of 1 - p_t inside the log, as in the original (log(1e-20) ~ -46)
MIN_ONE_MINUS_P = 1e-20


def log_one_minus_p(ce: torch.Tensor) -> torch.Tensor:
    """log(max(1 - p, 1e-20)) from CE = -log p.

    ``-expm1(-ce)`` is 1 - p without cancellation when p is close to 1; clamping *before* the log
    keeps the gradient finite (zero) where 1 - p underflows, including at ignored positions (CE = 0).
    """
    return torch.log((-torch.expm1(-ce)).clamp(min=MIN_ONE_MINUS_P))


class Unlikelihood(Objective):
    """Token-level unlikelihood on tokens of misaligned segments.

    Args:
        threshold: tokens with score <= threshold are aligned (toxicity 0.00078; pii and pep8 0.0).
            Unused (may be None) when ``soft``.
        alpha: weight >= 0 of the unlikelihood term (1 for toxicity and pii, 0.01 for pep8).
        soft: use a_t = 1 - s_t, the original code's behaviour for pii and pep8.
    """

    def __init__(self, threshold: float | None, alpha: float, soft: bool = False):
        if threshold is None and not soft:
            raise ValueError("Unlikelihood needs a threshold unless soft=True")
        if alpha < 0:
            raise ValueError(f"Unlikelihood alpha must be >= 0, got {alpha!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.alpha = float(alpha)
        self.soft = bool(soft)

    def loss(self, logits, labels, token_scores, values=None) -> LossOutput:
        t = shift_targets(logits, labels, token_scores)
        if self.soft:
            aligned = 1.0 - t.scores  # (B, T-1)
        else:
            aligned = (t.scores <= self.threshold).to(t.ce.dtype)  # (B, T-1)
        likelihood = t.mean(aligned * t.ce)
        unlikelihood = t.mean(-(1.0 - aligned) * log_one_minus_p(t.ce))
        loss = likelihood + self.alpha * unlikelihood
        metrics = {
            "lm_loss": t.mean(t.ce),
            "likelihood_loss": likelihood,
            "unlikelihood_loss": unlikelihood,
            "aligned_token_fraction": t.mean(aligned),
            "avg_token_score": t.mean(t.scores),
        }
        return LossOutput(loss, {k: x.detach() for k, x in metrics.items()})
