"""DPO and SPA's label-smoothed DPO, checked against hand-computed values."""

import math

import pytest
import torch
from torch.testing import assert_close

from phf.objectives.base import Objective
from phf.objectives.dpo import DPO
from phf.objectives.preference import (
    PreferenceObjective,
    RollingPercentile,
    dpo_logits,
    quantile,
    sequence_logps,
    smoothed_dpo_loss,
)


def softplus(x):
    return math.log1p(math.exp(x))


# one pair: log π_θ(y_w) = -2, log π_ref(y_w) = -3, log π_θ(y_l) = -4, log π_ref(y_l) = -3
PC, RC, PR, RR = -2.0, -3.0, -4.0, -3.0


def test_plain_dpo_by_hand():
    """β = 0.5: m = 0.5·[(-2 - -3) - (-4 - -3)] = 0.5·[1 - (-1)] = 1.0;
    L = -log σ(1) = log(1 + e^-1) = 0.313262. With refine_alpha = 0 DPO is exactly this."""
    t = lambda x: torch.tensor([x])  # noqa: E731
    m = dpo_logits(t(PC), t(PR), t(RC), t(RR), beta=0.5)
    assert_close(m, t(1.0))
    assert_close(smoothed_dpo_loss(m), t(0.313262), atol=1e-6, rtol=0)
    out = DPO(beta=0.5, refine_alpha=0.0).preference_loss(t(PC), t(PR), t(RC), t(RR))
    assert out.loss.item() == pytest.approx(softplus(-1.0), abs=1e-6)
    assert out.metrics["dpo/accuracy"].item() == 1.0
    assert out.metrics["dpo/reward_chosen"].item() == pytest.approx(0.5)  # β·(−2 − −3)
    assert out.metrics["dpo/reward_rejected"].item() == pytest.approx(-0.5)  # β·(−4 − −3)


def test_label_smoothing_by_hand():
    """α = 0.1 on a flagged pair with m = 1:
    L = -(1-0.1)·log σ(1) - 0.1·log σ(-1) = 0.9·0.313262 + 0.1·1.313262 = 0.281936 + 0.131326 = 0.413262,
    i.e. -log σ(m) + α·m = 0.313262 + 0.1. A pair with m = -2 (mislabelled-looking):
    0.9·log(1+e^2) + 0.1·log(1+e^-2) = 0.9·2.126928 + 0.1·0.126928 = 1.914235 + 0.012693 = 1.926928."""
    m = torch.tensor([1.0, -2.0])
    assert_close(smoothed_dpo_loss(m, 0.1), torch.tensor([0.413262, 1.926928]), atol=1e-6, rtol=0)
    # the smoothed pair's gradient vanishes at σ(m) = 1 - α, not at m = ∞
    x = torch.tensor([math.log(0.9 / 0.1)], requires_grad=True)
    smoothed_dpo_loss(x, 0.1).sum().backward()
    assert abs(x.grad.item()) < 1e-6


def test_only_the_least_confident_pairs_are_smoothed():
    """Four pairs with β = 1, reference log-probs 0, so m = log π(y_w) - log π(y_l) = [2, 1, -1, 3].
    The window holds only this batch's mean margin (5/4 = 1.25), so τ = 1.25 and z = 1[m > τ] = [1, 0, 0, 1]:
    pairs 2 and 3 are flagged. α = 0.2, past the warm-up:
    L = mean(softplus(-2), softplus(-1) + 0.2·1, softplus(1) + 0.2·(-1), softplus(-3))
      = mean(0.126928, 0.513262, 1.113262, 0.048587) = 1.802039 / 4 = 0.450510."""
    obj = DPO(beta=1.0, refine_alpha=0.2, refine_percentile=0.1, refine_window=50, warmup_frac=0.2)
    pc = torch.tensor([2.0, 1.0, -1.0, 3.0])
    zero = torch.zeros(4)
    out = obj.preference_loss(pc, zero, zero, zero, progress=0.5)
    expected = (softplus(-2) + softplus(-1) + 0.2 + softplus(1) - 0.2 + softplus(-3)) / 4
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.450510, abs=1e-6)
    assert out.flagged.tolist() == [False, True, True, False]
    assert out.metrics["refine/tau"].item() == pytest.approx(1.25)


def test_warmup_turns_smoothing_off_but_fills_the_window():
    """Same batch at progress 0.1 < warmup 0.2: plain DPO (no flags), yet the window grows."""
    obj = DPO(beta=1.0, refine_alpha=0.2, warmup_frac=0.2)
    pc, zero = torch.tensor([2.0, 1.0, -1.0, 3.0]), torch.zeros(4)
    out = obj.preference_loss(pc, zero, zero, zero, progress=0.1)
    assert out.loss.item() == pytest.approx((softplus(-2) + softplus(-1) + softplus(1) + softplus(-3)) / 4, abs=1e-6)
    assert not out.flagged.any() and out.metrics["refine/active"].item() == 0.0
    assert obj.state_dict()["rolling"]["values"] == [1.25]


def test_rolling_percentile_by_hand_and_state_round_trip():
    """Window 4, q = 0.25: after means 4, 1, 3, 2, 0 the window is [1, 3, 2, 0] → sorted [0, 1, 2, 3],
    position 0.25·3 = 0.75 → τ = 0 + 0.75·(1 - 0) = 0.75."""
    r = RollingPercentile(q=0.25, window=4)
    for v in [4.0, 1.0, 3.0]:
        r.update(torch.tensor([v]))
    r.update(torch.tensor([1.0, 3.0]))  # a batch contributes its mean, 2
    assert r.update(torch.tensor([0.0])) == pytest.approx(0.75)
    s = RollingPercentile(q=0.25, window=4)
    s.load_state_dict(r.state_dict())
    assert s.update(torch.tensor([5.0])) == r.update(torch.tensor([5.0]))
    with pytest.raises(ValueError, match="window"):
        RollingPercentile(q=0.25, window=5).load_state_dict(r.state_dict())
    assert quantile([3.0], 0.1) == 3.0


def test_dpo_objective_state_and_guards():
    obj = DPO(dnd_lambda=[0.5, 0.25, 0.125])
    assert [obj.lambda_for(i) for i in range(5)] == [0.5, 0.25, 0.125, 0.125, 0.125]
    obj.preference_loss(torch.tensor([1.0]), torch.zeros(1), torch.zeros(1), torch.zeros(1))
    other = DPO()
    other.load_state_dict(obj.state_dict())
    assert other.state_dict() == obj.state_dict() and other.state_dict()["rolling"]["values"]
    # a preference objective has no token loss at all (phf-train refuses it: see the last test)
    assert isinstance(obj, PreferenceObjective) and not isinstance(obj, Objective)
    assert not hasattr(obj, "loss")
    with pytest.raises(ValueError, match="refine_alpha"):
        DPO(refine_alpha=0.5)


def test_sequence_logps_sums_only_response_tokens():
    """Uniform logits over V = 4: every token has log p = -log 4; a row with 3 response targets sums
    to -3·log 4, whatever the prompt tokens are."""
    ids = torch.tensor([[0, 1, 2, 3, 0], [0, 2, 2, 0, 0]])
    resp = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]])
    logps = sequence_logps(torch.zeros(2, 5, 4), ids, resp)
    assert_close(logps, torch.tensor([-3 * math.log(4), -math.log(4)]))


def test_phf_train_refuses_a_preference_objective(tiny_cfg):
    """objective=dpo needs pairs and a reference model: phf-train stops before building anything."""
    from phf.train import train

    with pytest.raises(ValueError, match=r"DPO trains on preference pairs.*phf-spa"):
        train(tiny_cfg("objective=dpo"))
