"""Hand-computed Plackett-Luce losses (issue 9, acceptance 1).

Notation: e = aggregate of an item's token rewards; the scorer's misalignment s orders the list
(lower = better); L = -sum_k [e_k - log(exp(e_k) + sum_{i worse than k} exp(e_i))].
"""

import math

import pytest
import torch

from phf.guidance.listwise import aggregate, plackett_luce_loss, ranking_agreement

LN2, LN3 = math.log(2), math.log(3)


def lists(*items):
    """Token rewards of items of different lengths → rewards (1, K, T) and mask (1, K, T)."""
    t = max(len(x) for x in items)
    r = torch.zeros(1, len(items), t)
    m = torch.zeros(1, len(items), t, dtype=torch.bool)
    for k, x in enumerate(items):
        r[0, k, : len(x)] = torch.tensor(x)
        m[0, k, : len(x)] = True
    return r, m


def test_k2_is_bradley_terry():
    """Winner w: r = [0.9, 0.8] (s = 0.0); loser l: r = [0.2, 0.5] (s = 0.3); agg = sum.

    e_w = 1.7, e_l = 0.7; L = -log sigmoid(1.7 - 0.7) = log(1 + e^-1) = 0.313262.
    The loser's own term is e_l - log(exp(e_l)) = 0.
    """
    r, m = lists([0.9, 0.8], [0.2, 0.5])
    e = aggregate(r, m, "sum")
    assert torch.allclose(e, torch.tensor([[1.7, 0.7]]))
    loss, n = plackett_luce_loss(e, torch.tensor([[0.0, 0.3]]))
    assert n == 1 and loss.item() == pytest.approx(0.313262, abs=1e-6)
    # the list's order does not matter: the scores rank the items
    loss2, _ = plackett_luce_loss(e.flip(-1), torch.tensor([[0.3, 0.0]]))
    assert loss2.item() == pytest.approx(0.313262, abs=1e-6)


def test_k2_tied_pair_is_dropped():
    """Equal scores: both terms are e_k - log(exp(e_k)) = 0, and the list is not informative."""
    r, m = lists([0.9, 0.8], [0.2, 0.5])
    loss, n = plackett_luce_loss(aggregate(r, m, "sum"), torch.tensor([[0.1, 0.1]]))
    assert n == 0 and loss.item() == 0.0


# K = 3 items of lengths 1, 2, 3 (so C = mean length = 2), best to worst:
#   A: r = [1.0]               s = 0.0
#   B: r = [0.5, 0.5]          s = 0.1
#   C: r = [0.25, 0.25, 0.25]  s = 0.2
ITEMS = ([1.0], [0.5, 0.5], [0.25, 0.25, 0.25])
SCORES = torch.tensor([[0.0, 0.1, 0.2]])


@pytest.mark.parametrize(
    "how, log_mean_exp, expected_e, expected_loss",
    [
        # sum: e = (1, 1, 0.75). L = [log(e^1 + e^1 + e^0.75) - 1] + [log(e^1 + e^0.75) - 1]
        #      = 1.022019 + 0.575939 = 1.597959
        ("sum", False, (1.0, 1.0, 0.75), 1.597959),
        # avg: e = C * mean = 2 * (1, 0.5, 0.25) = (2, 1, 0.5).
        #      L = [log(e^2 + e^1 + e^0.5) - 2] + [log(e^1 + e^0.5) - 1] = 0.464369 + 0.474077 = 0.938446
        ("avg", False, (2.0, 1.0, 0.5), 0.938446),
        # softmax, tau = 1, paper's log-sum-exp: e = C * log sum exp(r)
        #      A: 2 * 1 = 2;  B: 2 * log(2 e^0.5) = 1 + 2 ln 2 = 2.386294;  C: 2 * log(3 e^0.25) = 0.5 + 2 ln 3 = 2.697225
        #      (the log T length bias ranks the worst, longest item first)
        #      L = [log(e^2 + e^2.386294 + e^2.697225) - 2] + [log(e^2.386294 + e^2.697225) - 2.386294]
        #        = 1.499554 + 0.860649 = 2.360202
        ("softmax", False, (2.0, 1 + 2 * LN2, 0.5 + 2 * LN3), 2.360202),
        # softmin, tau = 1, paper's form: e = -C * log sum exp(-r)
        #      A: 2;  B: -2 * log(2 e^-0.5) = 1 - 2 ln 2 = -0.386294;  C: -2 * log(3 e^-0.25) = 0.5 - 2 ln 3 = -1.697225
        #      L = [log(e^2 + e^-0.386294 + e^-1.697225) - 2] + [log(e^-0.386294 + e^-1.697225) + 0.386294]
        #        = 0.110434 + 0.238678 = 0.349111
        ("softmin", False, (2.0, 1 - 2 * LN2, 0.5 - 2 * LN3), 0.349111),
        # log-mean-exp removes the log T terms: constant rewards give e = C * r, as avg: (2, 1, 0.5), L = 0.938446
        ("softmax", True, (2.0, 1.0, 0.5), 0.938446),
        ("softmin", True, (2.0, 1.0, 0.5), 0.938446),
    ],
)
def test_k3_each_aggregation(how, log_mean_exp, expected_e, expected_loss):
    r, m = lists(*ITEMS)
    e = aggregate(r, m, how, temperature=1.0, log_mean_exp=log_mean_exp)
    assert torch.allclose(e, torch.tensor([expected_e]), atol=1e-5)
    loss, n = plackett_luce_loss(e, SCORES)
    assert n == 1 and loss.item() == pytest.approx(expected_loss, abs=1e-5)


def test_softmin_softmax_temperature():
    """tau = 0.5 on item r = [1.0, 0.0] of a list of two items of length 2 (C = 2):
    softmax: C * tau * log(e^2 + e^0) = 1 * log(8.389056) = 2.126928  (log-sum-exp)
    softmin: -C * tau * log(e^-2 + e^0) = -log(1.135335) = -0.126928
    with log-mean-exp both move by C * tau * log 2 = 0.693147: 1.433781 and 0.566219."""
    r, m = lists([1.0, 0.0], [0.5, 0.5])
    sm = aggregate(r, m, "softmax", temperature=0.5, log_mean_exp=False)[0, 0].item()
    mn = aggregate(r, m, "softmin", temperature=0.5, log_mean_exp=False)[0, 0].item()
    assert sm == pytest.approx(2.126928, abs=1e-5) and mn == pytest.approx(-0.126928, abs=1e-5)
    sm = aggregate(r, m, "softmax", temperature=0.5, log_mean_exp=True)[0, 0].item()
    mn = aggregate(r, m, "softmin", temperature=0.5, log_mean_exp=True)[0, 0].item()
    assert sm == pytest.approx(1.433781, abs=1e-5) and mn == pytest.approx(0.566219, abs=1e-5)


def test_k3_ties_dropped_from_denominators():
    """avg e = (2, 1, 0.5).
    B and C tied: A's term keeps both, B's denominator drops C (tied): L = log(e^2 + e^1 + e^0.5) - 2 = 0.464369.
    A and B tied: A's denominator drops B: [log(e^2 + e^0.5) - 2] + [log(e^1 + e^0.5) - 1] = 0.675490."""
    r, m = lists(*ITEMS)
    e = aggregate(r, m, "avg")
    loss, _ = plackett_luce_loss(e, torch.tensor([[0.0, 0.1, 0.1]]))
    assert loss.item() == pytest.approx(0.464369, abs=1e-5)
    loss, _ = plackett_luce_loss(e, torch.tensor([[0.0, 0.0, 0.2]]))
    assert loss.item() == pytest.approx(0.675490, abs=1e-5)
    # tie_eps turns near-ties into ties: 0.0 vs 0.05 within eps 0.06 -> the A/B case again
    loss, _ = plackett_luce_loss(e, torch.tensor([[0.0, 0.05, 0.2]]), tie_eps=0.06)
    assert loss.item() == pytest.approx(0.675490, abs=1e-5)


def test_loss_is_mean_over_informative_lists_and_has_gradient():
    e = torch.tensor([[1.7, 0.7], [0.0, 0.0]], requires_grad=True)
    loss, n = plackett_luce_loss(e, torch.tensor([[0.0, 0.3], [0.2, 0.2]]))
    assert n == 1 and loss.item() == pytest.approx(0.313262, abs=1e-6)
    loss.backward()
    # d/de_w of -log sigmoid(e_w - e_l) = -(1 - sigmoid(1)) = -0.268941; the tied list gets no gradient
    assert e.grad[0, 0].item() == pytest.approx(-0.268941, abs=1e-6)
    assert e.grad[0, 1].item() == pytest.approx(0.268941, abs=1e-6)
    assert torch.equal(e.grad[1], torch.zeros(2))


def test_ranking_agreement():
    """Two lists: (2, 1, 0.5) ordered as the scores (3 concordant pairs); (0, 1, 1) vs scores (0, 0.1, 0.2):
    pairs AB discordant, AC discordant, BC tie in e -> 3 concordant, 2 discordant, 1 tie of 6 pairs."""
    e = torch.tensor([[2.0, 1.0, 0.5], [0.0, 1.0, 1.0]])
    s = torch.tensor([[0.0, 0.1, 0.2], [0.0, 0.1, 0.2]])
    out = ranking_agreement(e, s)
    assert out["pairs"] == 6
    assert out["pair_accuracy"] == pytest.approx(3.5 / 6)
    assert out["kendall_tau"] == pytest.approx(1 / 6)


def test_bad_arguments():
    r, m = lists([1.0], [0.5])
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(r, m, "median")
    with pytest.raises(ValueError, match="temperature"):
        aggregate(r, m, "softmin", temperature=0.0)
    with pytest.raises(ValueError, match=r"\(L, K\)"):
        plackett_luce_loss(torch.zeros(3), torch.zeros(3))
