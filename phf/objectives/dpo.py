"""DPO with SPA's self-refinement: a *preference* objective, trained by ``phf-spa``, not ``phf-train``.

Kim et al. 2024 (SPA); the loss and its arithmetic are in ``phf.objectives.preference``. Per pair,

    m = β·[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]
    z = 1[m̄ > τ],   τ = rolling ``refine_percentile`` quantile of micro-batch mean margins
    L = −(1 − α(1−z))·log σ(m) − α(1−z)·log σ(−m),   α = refine_alpha (0 during the warm-up fraction)

with m̄ = m, or the margin of DND's extrapolated logits (1+λ)·h_θ − λ·h_ref when λ > 0. With
``refine_alpha=0`` (and ``dnd_lambda=0``) it is plain DPO.

Two guards of phf's own (issue 30; neither is in Kim et al.), both off by default:

* ``length_normalise``: every log-ratio in m (and m̄) is divided by its response's tokens, so
  m = β·[(log π_θ(y_w) − log π_ref(y_w))/|y_w| − (log π_θ(y_l) − log π_ref(y_l))/|y_l|]
  (LN-DPO / SimPO's length-normalised reward; per-token log-ratios are ~|y| times smaller than sums,
  so β must be larger for the same logit scale);
* ``nll_weight`` = c > 0 adds ``c · (−log π_θ(y_w|x)/|y_w|)``, the chosen response's per-token NLL
  (DPO+NLL, "RPO", Pang et al. 2024), against likelihood displacement (both responses losing likelihood).

Why it is registered here but has no token loss: the phf token-objective contract (``loss(logits,
labels, token_scores, values)``) is an LM loss on packed blocks of the pretraining stream; DPO needs
(prompt, chosen, rejected) pairs and a frozen reference model, which the stream does not carry. So DPO is
a ``PreferenceObjective``: the registry entry holds the method's hyperparameters, its checkpointed
rolling state and its sampling settings (no control tokens: SPA finetunes an MLE model), and
``phf.spa.train_dpo`` is the loop that feeds it pairs. phf-train refuses it with a pointer to ``phf-spa``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from phf.objectives.preference import (
    PreferenceLossOutput,
    PreferenceObjective,
    RollingPercentile,
    chosen_nll,
    dpo_logits,
    per_token,
    smoothed_dpo_loss,
)


class DPO(PreferenceObjective):
    """DPO (``refine_alpha=0``) or SPA's DPO with confidence-based label smoothing.

    Args:
        beta: DPO's β (SPA: 0.1); also the implicit-reward labeler's β unless ``spa.implicit_beta`` says otherwise.
        refine_alpha: label-smoothing α on the flagged (least confident) pairs; 0 = plain DPO (SPA: 0.1).
        refine_percentile: τ's quantile of the rolling window (SPA: 0.10).
        refine_window: micro-batches in the rolling window (SPA: 50).
        warmup_frac: fraction of a round's optimizer steps with α = 0 (SPA: 0.2).
        dnd_lambda: DND's λ, a number or one value per round (seed, round 1, ...; the last repeats);
            0 = off (SPA's released configs); the paper's schedule is [0.5, 0.25, 0.125].
        length_normalise: divide each log-ratio by its response's tokens (phf's guard; module docstring).
        nll_weight: weight c of the chosen response's per-token NLL added to the loss (DPO+NLL; phf's guard).
    """

    def __init__(
        self,
        beta: float = 0.1,
        refine_alpha: float = 0.1,
        refine_percentile: float = 0.10,
        refine_window: int = 50,
        warmup_frac: float = 0.2,
        dnd_lambda: float | Sequence[float] = 0.0,
        length_normalise: bool = False,
        nll_weight: float = 0.0,
    ):
        if not beta > 0:
            raise ValueError(f"DPO beta must be positive, got {beta!r}")
        if not 0.0 <= refine_alpha < 0.5:
            raise ValueError(f"DPO refine_alpha must be in [0, 0.5), got {refine_alpha!r} (0.5 ignores the labels)")
        if not 0.0 <= warmup_frac <= 1.0:
            raise ValueError(f"DPO warmup_frac must be in [0, 1], got {warmup_frac!r}")
        lambdas = [float(dnd_lambda)] if isinstance(dnd_lambda, int | float) else [float(x) for x in dnd_lambda]
        if not lambdas or any(x < 0 for x in lambdas):
            raise ValueError(f"DPO dnd_lambda must be >= 0 (a number or a non-empty list), got {dnd_lambda!r}")
        if not nll_weight >= 0:
            raise ValueError(f"DPO nll_weight must be >= 0, got {nll_weight!r}")
        self.length_normalise = bool(length_normalise)
        self.nll_weight = float(nll_weight)
        self.beta = float(beta)
        self.refine_alpha = float(refine_alpha)
        self.refine_percentile = float(refine_percentile)
        self.refine_window = int(refine_window)
        self.warmup_frac = float(warmup_frac)
        self.dnd_lambda = lambdas
        self._window = RollingPercentile(self.refine_percentile, self.refine_window)

    # -- preference training -----------------------------------------------------------------------
    @property
    def refines(self) -> bool:
        return self.refine_alpha > 0

    def lambda_for(self, stage_index: int) -> float:
        """DND's λ for stage ``stage_index`` (0 = seed); the last listed value repeats."""
        return self.dnd_lambda[min(stage_index, len(self.dnd_lambda) - 1)]

    def margin(self, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, chosen_tokens: torch.Tensor | None = None,
               rejected_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """The DPO logit m of each pair (per-token log-ratios when ``length_normalise``)."""
        if not self.length_normalise:
            return dpo_logits(policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.beta)
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("DPO length_normalise needs the response token counts of every pair")
        return self.beta * (per_token(policy_chosen - ref_chosen, chosen_tokens)
                            - per_token(policy_rejected - ref_rejected, rejected_tokens))

    def reset(self) -> None:
        """Empty the rolling window (a new round trains a new policy)."""
        self._window = RollingPercentile(self.refine_percentile, self.refine_window)

    def preference_loss(
        self,
        policy_chosen: torch.Tensor,
        policy_rejected: torch.Tensor,
        ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor,
        progress: float = 1.0,
        confidence: torch.Tensor | None = None,
        chosen_tokens: torch.Tensor | None = None,
        rejected_tokens: torch.Tensor | None = None,
    ) -> PreferenceLossOutput:
        """Mean loss over a micro-batch of pairs; each argument is (B,) summed response log-probs
        (``*_tokens``: the responses' token counts, needed by ``length_normalise`` and ``nll_weight``).

        ``progress`` = optimizer steps done / steps of the round (refinement is off below
        ``warmup_frac``); ``confidence`` = the pairs' m̄ (default m, i.e. no DND). The rolling window
        is updated on every call. ``flagged`` is the per-pair z = 0 mask while refinement is active.
        """
        m = self.margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens)
        mbar = (m if confidence is None else confidence).detach()
        metrics = {
            "dpo/logit": m.detach().mean(),
            "dpo/accuracy": (m.detach() > 0).float().mean(),
            "dpo/reward_chosen": self.beta * (policy_chosen - ref_chosen).detach().mean(),
            "dpo/reward_rejected": self.beta * (policy_rejected - ref_rejected).detach().mean(),
        }
        active = self.refines and progress >= self.warmup_frac
        if self.refines:
            tau = self._window.update(mbar)
            z = (mbar > tau).to(m.dtype)
            metrics["refine/tau"] = torch.tensor(tau)
            metrics["refine/flagged_fraction"] = (1.0 - z).mean()
        else:
            z = torch.ones_like(m)
        smoothing = self.refine_alpha * (1.0 - z) if active else torch.zeros_like(m)
        loss = smoothed_dpo_loss(m, smoothing).mean()
        if self.nll_weight > 0:
            if chosen_tokens is None:
                raise ValueError("DPO nll_weight needs the chosen responses' token counts")
            nll = chosen_nll(policy_chosen, chosen_tokens)
            loss = loss + self.nll_weight * nll
            metrics["dpo/nll_chosen"] = nll.detach()
        metrics["refine/active"] = torch.tensor(float(active))
        flagged = (z < 0.5) if active else torch.zeros_like(m, dtype=torch.bool)
        return PreferenceLossOutput(loss=loss, metrics=metrics, flagged=flagged)

    def state_dict(self) -> dict:
        return {"rolling": self._window.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._window.load_state_dict(state["rolling"])
