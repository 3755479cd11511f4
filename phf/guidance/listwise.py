"""Listwise preference learning for token-level guidance (Yang et al. 2023, §1.2-1.3 of the notes).

A list holds K items (sequences or chunks). The reward model gives every token t of item k a reward
r_t in (0, 1]; an aggregation f turns the rewards of item k into its sequence-level value e_k.
With T_k the number of aggregated tokens of item k and C the mean T_k over the list:

    sum      e_k = sum_t r_t
    avg      e_k = C * (1/T_k) * sum_t r_t
    softmax  e_k = C * tau * log sum_t exp(r_t / tau)          [- C * tau * log T_k  with log_mean_exp]
    softmin  e_k = -C * tau * log sum_t exp(-r_t / tau)        [+ C * tau * log T_k  with log_mean_exp]

``log_mean_exp`` (phf's default) replaces log-sum-exp by log-mean-exp: with r in (0, 1] and the
paper's tau = 2 the log T_k term otherwise dominates soft-max/min, i.e. a length bias (pitfall 2 of
the notes). ``log_mean_exp=False`` is the paper's formula.

Plackett-Luce (ListMLE) with ties dropped. The scorer gives each item a misalignment score s_k
(lower = better). Item i is *worse* than item k when s_i > s_k + tie_eps. The loss of one list is

    L = - sum_k [ e_k - log( exp(e_k) + sum_{i worse than k} exp(e_i) ) ]

With distinct scores this is exactly the paper's listwise loss (sorted best to worst, the denominator
of item k runs over k and every item ranked below it). Items tied with k (|s_i - s_k| <= tie_eps)
are left out of k's denominator, so a tied pair contributes nothing and no tie is broken at random
(the paper shuffles and sorts, i.e. breaks ties at random; we drop tied pairs as the issue asks).
K = 2 gives Bradley-Terry: L = -log sigmoid(e_w - e_l), and 0 for a tied pair.
"""

from __future__ import annotations

import math

import torch

AGGREGATIONS = ("sum", "avg", "softmax", "softmin")


def aggregate(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    how: str = "avg",
    temperature: float = 2.0,
    log_mean_exp: bool = True,
) -> torch.Tensor:
    """Aggregate token rewards (..., K, T) over the positions where ``mask`` is true → (..., K).

    C is the mean number of aggregated tokens over the K items of each list (the last-but-one
    dimension). An item with no aggregated token gets e = 0.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"guidance aggregation must be one of {AGGREGATIONS}, got {how!r}")
    if not temperature > 0:
        raise ValueError(f"guidance temperature must be > 0, got {temperature!r}")
    m = mask.to(torch.bool)
    r = rewards.float()
    lengths = m.sum(-1).to(r.dtype)  # (..., K)
    empty = lengths == 0
    c = lengths.mean(-1, keepdim=True)  # (..., 1)
    if how == "sum":
        return (r * m).sum(-1)
    if how == "avg":
        return c * (r * m).sum(-1) / lengths.clamp(min=1.0)
    tau = float(temperature)
    sign = 1.0 if how == "softmax" else -1.0
    x = torch.where(m, sign * r / tau, torch.full_like(r, -math.inf))
    lse = torch.logsumexp(x, dim=-1)  # (..., K); -inf for an empty item
    if log_mean_exp:
        lse = lse - torch.log(lengths.clamp(min=1.0))
    e = sign * c * tau * lse
    return torch.where(empty, torch.zeros_like(e), e)


def _worse(scores: torch.Tensor, tie_eps: float) -> torch.Tensor:
    """worse[..., k, i] = item i is strictly worse than item k (by more than tie_eps)."""
    s = scores.float()
    return s.unsqueeze(-2) > s.unsqueeze(-1) + tie_eps


def plackett_luce_loss(e: torch.Tensor, scores: torch.Tensor, tie_eps: float = 0.0) -> tuple[torch.Tensor, int]:
    """Listwise Plackett-Luce loss with tied pairs dropped (module docstring).

    e, scores: (L, K). Returns (mean loss over the lists that hold at least one untied pair, number of
    such lists). A batch of all-tied lists gives a zero loss that still carries a graph.
    """
    if e.shape != scores.shape or e.dim() != 2:
        raise ValueError(f"e and scores must both be (L, K), got {tuple(e.shape)} and {tuple(scores.shape)}")
    k = e.shape[-1]
    worse = _worse(scores, tie_eps)  # (L, K, K)
    include = worse | torch.eye(k, dtype=torch.bool, device=e.device)
    logits = e.unsqueeze(-2).expand(-1, k, -1)  # [l, k, i] = e_i
    denom = torch.logsumexp(torch.where(include, logits, torch.full_like(logits, -math.inf)), dim=-1)
    per_list = -(e - denom).sum(-1)  # (L,)
    informative = worse.flatten(1).any(-1)
    n = int(informative.sum())
    return (per_list * informative).sum() / max(n, 1), n


@torch.no_grad()
def ranking_agreement(e: torch.Tensor, scores: torch.Tensor, tie_eps: float = 0.0) -> dict[str, float]:
    """Agreement of the aggregate with the scorer's ranking over the untied pairs of each list.

    A pair (i, k) with s_i > s_k + tie_eps is concordant when e_k > e_i (the better item gets the
    larger aggregate), discordant when e_k < e_i. ``pair_accuracy`` = (concordant + ties_in_e / 2) /
    pairs; ``kendall_tau`` = (concordant - discordant) / pairs (tau-a over the untied pairs).
    """
    worse = _worse(scores, tie_eps)  # [l, k, i]: i worse than k
    diff = e.unsqueeze(-1) - e.unsqueeze(-2)  # [l, k, i] = e_k - e_i
    n = int(worse.sum())
    if n == 0:
        return {"pair_accuracy": float("nan"), "kendall_tau": float("nan"), "pairs": 0}
    conc = int(((diff > 0) & worse).sum())
    disc = int(((diff < 0) & worse).sum())
    ties = n - conc - disc
    return {"pair_accuracy": (conc + 0.5 * ties) / n, "kendall_tau": (conc - disc) / n, "pairs": n}
