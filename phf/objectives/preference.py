"""Preference objectives and their math: DPO with SPA's self-refinement (Kim et al. 2024, "Spread
Preference Annotation"), as plain functions, and the ``PreferenceObjective`` contract.

Notation: a pair is a prompt x with a chosen response y_w and a rejected one y_l; ``log π(y|x)`` is the
sum of the response tokens' log-probabilities. With a frozen reference π_ref (SPA: the previous round's
policy), the DPO logit of a pair is

    m = β · [(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))]

and plain DPO minimises ``−log σ(m)``. Self-refinement smooths the labels of the least confident pairs:

    z = 1[m̄ > τ]                    (m̄: the pair's confidence margin, τ: a rolling percentile)
    L = −(1 − α(1−z)) · log σ(m) − α(1−z) · log σ(−m)

Since ``−log σ(−m) = −log σ(m) + m``, a flagged pair (z = 0) costs ``−log σ(m) + α·m``: its gradient
with respect to m is ``σ(m) − 1 + α``, so the pair stops being pushed once σ(m) reaches 1 − α. That is
the conservative-DPO (cDPO) label-smoothing loss applied to the flagged pairs only.

The confidence margin m̄ is m itself, or, with de-coupled noise detection (DND, λ > 0), the DPO logit
of the extrapolated model whose per-token logits are ``h̄ = (1+λ)·h_θ − λ·h_ref`` (``extrapolated_logps``).

τ is the ``percentile``-th quantile of a rolling window of per-micro-batch mean margins
(``RollingPercentile``). The window is updated with every micro-batch, warm-up included; refinement is
off (α = 0) for the first ``warmup_frac`` of the optimizer steps.

A preference objective is trained by phf-spa (``phf.spa.train_dpo``) on (prompt, chosen, rejected) pairs
with a frozen reference model; it has no token loss on packed blocks, so phf-train refuses it.
Sequence log-probabilities use the objectives' one causal shift (``phf.objectives.base.sequence_logps``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from phf.objectives.base import BaseObjective, LossOutput, sequence_logps

__all__ = [
    "PreferenceLossOutput",
    "PreferenceObjective",
    "RollingPercentile",
    "dpo_logits",
    "chosen_nll",
    "extrapolated_logps",
    "per_token",
    "quantile",
    "sequence_logps",
    "smoothed_dpo_loss",
]


def extrapolated_logps(policy_logits: torch.Tensor, ref_logits: torch.Tensor, lam: float,
                       input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Sequence log-probs under DND's extrapolated model h̄ = (1+λ)·h_θ − λ·h_ref (no gradient)."""
    with torch.no_grad():
        mixed = (1.0 + lam) * policy_logits.detach().float() - lam * ref_logits.detach().float()
        return sequence_logps(mixed, input_ids, response_mask)


def dpo_logits(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """m = β·[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))], one per pair."""
    return beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))


def per_token(logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Length normalisation: a summed response log-prob (or log-ratio) divided by its response tokens.

    phf's guard against the sum's length bias (a sum of per-token log-ratios grows with the response):
    the implicit reward becomes ``β·[log π_θ(y|x) − log π_ref(y|x)] / |y|``, as in LN-DPO / SimPO's
    length-normalised reward (not part of Kim et al.'s SPA, whose rewards are sums).
    """
    if bool((n_tokens <= 0).any()):
        raise ValueError("length normalisation needs at least one response token per row")
    return logps / n_tokens.to(logps.dtype)


def chosen_nll(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of the chosen response's per-token negative log-likelihood, ``−log π_θ(y_w|x) / |y_w|``.

    The NLL term of DPO+NLL (Pang et al. 2024, "Iterative Reasoning Preference Optimization"; "RPO"):
    DPO alone can lower the likelihood of *both* responses as long as their difference grows
    ("likelihood displacement"); this term keeps the chosen one likely. A phf guard, not part of SPA.
    """
    return (-per_token(policy_chosen, chosen_tokens)).mean()


def smoothed_dpo_loss(m: torch.Tensor, smoothing: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-pair ``−(1−ε)·log σ(m) − ε·log σ(−m)``; ε = 0 is plain DPO, ε = α(1−z) is SPA's refinement."""
    return -(1.0 - smoothing) * F.logsigmoid(m) - smoothing * F.logsigmoid(-m)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` with linear interpolation between order statistics (numpy's default):
    sorted v_0 <= ... <= v_{n-1}, position q·(n−1), interpolated between its two neighbours."""
    if not values:
        raise ValueError("quantile of an empty window")
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


class RollingPercentile:
    """τ = the ``q``-quantile of the last ``window`` per-micro-batch mean margins.

    SPA's code keeps a 50-entry deque of micro-batch mean margins and takes the mean of its 6th and 7th
    smallest entries; phf uses the interpolated quantile (``quantile``), which for q = 0.1 and a full
    window of 50 lies between the 5th and 6th smallest. ``state_dict`` holds the window, so a resumed run
    flags exactly the pairs the uninterrupted run would have flagged.
    """

    def __init__(self, q: float = 0.10, window: int = 50):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"refine_percentile must be in [0, 1], got {q}")
        if window < 1:
            raise ValueError(f"refine_window must be >= 1, got {window}")
        self.q, self.window = float(q), int(window)
        self.values: deque[float] = deque(maxlen=self.window)

    def update(self, batch_margins: torch.Tensor) -> float:
        """Append the batch's mean margin, then return τ over the window (this batch included)."""
        self.values.append(float(batch_margins.detach().float().mean()))
        return quantile(list(self.values), self.q)

    def state_dict(self) -> dict:
        return {"q": self.q, "window": self.window, "values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        if state["window"] != self.window or state["q"] != self.q:
            raise ValueError(f"rolling-percentile state for q={state['q']}, window={state['window']} cannot be "
                             f"loaded into q={self.q}, window={self.window}")
        self.values = deque((float(v) for v in state["values"]), maxlen=self.window)


@dataclass
class PreferenceLossOutput(LossOutput):
    """``LossOutput`` plus the per-pair noise flags (True = z = 0, label smoothed in this call)."""

    flagged: torch.Tensor | None = None


class PreferenceObjective(BaseObjective):
    """An objective trained on (prompt, chosen, rejected) pairs against a frozen reference model (phf-spa).

    It offers no token ``loss(logits, labels, token_scores, values)``: the pretraining stream carries
    neither pairs nor a reference, so phf-train refuses it (``phf.guidance.build_objective``). The
    preference loop calls ``reset`` at the start of a round, ``preference_loss`` on every micro-batch
    and checkpoints ``state_dict`` (the objective's rolling state).
    """

    def preference_loss(
        self,
        policy_chosen: torch.Tensor,
        policy_rejected: torch.Tensor,
        ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor,
        progress: float = 1.0,
        confidence: torch.Tensor | None = None,
    ) -> PreferenceLossOutput:
        """Mean loss over a micro-batch of pairs; each argument is (B,) summed response log-probs."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the rolling state (a new round trains a new policy)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
