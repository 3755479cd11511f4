"""phf's guards on DPO (issue 30): length-normalised implicit reward and the chosen-NLL term, by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from phf.objectives.dpo import DPO
from phf.objectives.preference import chosen_nll, per_token


def softplus(x):
    return math.log1p(math.exp(x))


# one pair: chosen 2 tokens, rejected 4 tokens;
# log π_θ(y_w) = -2, log π_ref(y_w) = -3, log π_θ(y_l) = -4, log π_ref(y_l) = -3
PC, RC, PR, RR = -2.0, -3.0, -4.0, -3.0
NC, NR = 2, 4


def t(x):
    return torch.tensor([x])


def test_per_token_and_chosen_nll_by_hand():
    """per_token([-2, -6], [2, 3]) = [-1, -2]; chosen NLL = mean(2/2, 6/3) = mean(1, 2) = 1.5."""
    lp, n = torch.tensor([-2.0, -6.0]), torch.tensor([2, 3])
    assert_close(per_token(lp, n), torch.tensor([-1.0, -2.0]))
    assert chosen_nll(lp, n).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="at least one response token"):
        per_token(lp, torch.tensor([2, 0]))


def test_length_normalised_margin_by_hand():
    """β = 0.5. Summed: m = 0.5·[(−2+3) − (−4+3)] = 0.5·[1 + 1] = 1.0.
    Per token: chosen log-ratio 1/2 = 0.5, rejected −1/4 = −0.25, m = 0.5·(0.5 + 0.25) = 0.375;
    L = −log σ(0.375) = softplus(−0.375) = log(1 + 0.687289) = 0.523123.
    The longer rejected response no longer weighs twice: its −1 counts as −0.25 per token."""
    plain = DPO(beta=0.5, refine_alpha=0.0)
    ln = DPO(beta=0.5, refine_alpha=0.0, length_normalise=True)
    assert plain.margin(t(PC), t(PR), t(RC), t(RR)).item() == pytest.approx(1.0)
    m = ln.margin(t(PC), t(PR), t(RC), t(RR), t(NC), t(NR))
    assert m.item() == pytest.approx(0.375)
    out = ln.preference_loss(t(PC), t(PR), t(RC), t(RR), chosen_tokens=t(NC), rejected_tokens=t(NR))
    assert out.loss.item() == pytest.approx(softplus(-0.375), abs=1e-6)
    assert out.loss.item() == pytest.approx(0.523123, abs=1e-6)
    with pytest.raises(ValueError, match="token counts"):
        ln.preference_loss(t(PC), t(PR), t(RC), t(RR))


def test_nll_term_by_hand_and_its_gradient():
    """β = 0.5, c = 0.2: m = 1.0 (summed), DPO part softplus(−1) = 0.313262; the chosen per-token
    NLL is 2/2 = 1.0, so L = 0.313262 + 0.2·1.0 = 0.513262.

    Gradient with respect to log π_θ(y_w): DPO gives −β·(1 − σ(m)) = −0.5·0.268941 = −0.134471,
    the NLL term −c/|y_w| = −0.2/2 = −0.1: total −0.234471 (the term pushes the chosen one *up*
    whatever the margin, which is what stops likelihood displacement). log π_θ(y_l) only sees DPO:
    +β·(1 − σ(m)) = +0.134471."""
    obj = DPO(beta=0.5, refine_alpha=0.0, nll_weight=0.2)
    pc, pr = torch.tensor([PC], requires_grad=True), torch.tensor([PR], requires_grad=True)
    out = obj.preference_loss(pc, pr, t(RC), t(RR), chosen_tokens=t(NC), rejected_tokens=t(NR))
    assert out.loss.item() == pytest.approx(0.513262, abs=1e-6)
    assert out.metrics["dpo/nll_chosen"].item() == pytest.approx(1.0)
    out.loss.backward()
    assert pc.grad.item() == pytest.approx(-0.234471, abs=1e-6)
    assert pr.grad.item() == pytest.approx(0.134471, abs=1e-6)
    with pytest.raises(ValueError, match="nll_weight"):
        DPO(nll_weight=-1.0)


def test_guards_off_is_plain_dpo():
    """Defaults: no normalisation, no NLL: exactly plain DPO's softplus(−1) = 0.313262, token counts or not."""
    obj = DPO(beta=0.5, refine_alpha=0.0)
    a = obj.preference_loss(t(PC), t(PR), t(RC), t(RR)).loss
    b = obj.preference_loss(t(PC), t(PR), t(RC), t(RR), chosen_tokens=t(NC), rejected_tokens=t(NR)).loss
    assert a.item() == b.item() == pytest.approx(softplus(-1.0), abs=1e-6)
