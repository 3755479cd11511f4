"""AWR: alpha * mean(w_t CE_t) + (1 - alpha) * mean((r_t - V_t)^2), w_t = min(exp((r_t - sg(V_t)) / beta), clip)."""

import math

import pytest
import torch
from torch.testing import assert_close

from phf.objectives import AWR, IGNORE_INDEX


def logits_from_probs(probs):
    return torch.tensor(probs, dtype=torch.float32).log()


# B=1, T=4, V=2; CE at pos0..2 = [log 2, log 4, log 10]; pos3 predicts nothing.
PROBS = [[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1], [0.5, 0.5]]]
LABELS = [[0, 1, 0, 1]]
SCORES = [[9.0, 0.0, 0.5, 0.0]]  # target scores s = [0, 0.5, 0] -> r = [0, -0.5, 0]
VALUES = [[-0.5, -0.25, -0.5, 99.0]]  # V_t = values[:, t]; values[:, 3] must never be read
LN, E = math.log, math.exp


def run(alpha=0.5, beta=1.0, labels=LABELS, values=None):
    values = torch.tensor(VALUES, requires_grad=True) if values is None else values
    out = AWR(alpha=alpha, beta=beta).loss(
        logits_from_probs(PROBS), torch.tensor(labels), torch.tensor(SCORES), values
    )
    return out, values


def test_hand_computed():
    """A = r - V = [0.5, -0.25, 0.5]; beta 1: w = [e^.5, e^-.25, e^.5].
    weighted = (e^.5 log 2 + e^-.25 log 4 + e^.5 log 10) / 3; value loss = (.25 + .0625 + .25) / 3 = 0.1875;
    alpha 0.5: loss = 0.5 weighted + 0.5 * 0.1875. V and r are perfectly anti-correlated: corr = -1."""
    out, _ = run()
    weighted = (E(0.5) * LN(2) + E(-0.25) * LN(4) + E(0.5) * LN(10)) / 3
    assert_close(out.loss, torch.tensor(0.5 * weighted + 0.5 * 0.1875))
    m = out.metrics
    assert_close(m["weighted_lm_loss"], torch.tensor(weighted))
    assert_close(m["value_loss"], torch.tensor(0.1875))
    assert_close(m["lm_loss"], torch.tensor(LN(80) / 3))
    assert_close(m["weight_mean"], torch.tensor((2 * E(0.5) + E(-0.25)) / 3))
    assert_close(m["advantage_mean"], torch.tensor(0.25))
    assert_close(m["value_reward_corr"], torch.tensor(-1.0))
    assert all(not x.requires_grad and x.dim() == 0 for x in m.values())


def test_ignored_positions():
    """labels[3] = -100 drops pos2: weighted = (e^.5 log 2 + e^-.25 log 4) / 2, value loss = (.25 + .0625) / 2."""
    out, _ = run(labels=[[0, 1, 0, IGNORE_INDEX]])
    weighted = (E(0.5) * LN(2) + E(-0.25) * LN(4)) / 2
    assert_close(out.loss, torch.tensor(0.5 * weighted + 0.5 * 0.3125 / 2))


def test_value_gradient_flows_only_through_value_loss():
    """With A = r - stopgrad(V): dL/dV_t = (1 - alpha) * 2 (V_t - r_t) / N, N = 3, and 0 at the last position.
    alpha 0.5: 2 (V - r) / 6 = [-1/6, 0.25/3, -1/6, 0]. Without the stopgrad the LM term would add
    -alpha * w_t CE_t / (beta N)."""
    out, values = run()
    out.loss.backward()
    assert_close(values.grad, torch.tensor([[-1 / 6, 0.25 / 3, -1 / 6, 0.0]]))


def test_alpha_one_gives_the_value_head_no_gradient():
    out, values = run(alpha=1.0)
    out.loss.backward()
    assert_close(values.grad, torch.zeros(1, 4))


def test_clip_and_constant_value_correlation():
    """V = 5 everywhere is constant (correlation reported as 0); A = r - 5, beta 0.1 -> w = e^-50 etc., no clip;
    V = -100: A = 100 + r -> exp(1000) clipped to 1000 at every position."""
    out, _ = run(values=torch.full((1, 4), 5.0))
    assert_close(out.metrics["value_reward_corr"], torch.tensor(0.0))
    out, _ = run(beta=0.1, values=torch.full((1, 4), -100.0))
    assert_close(out.metrics["weight_mean"], torch.tensor(1000.0))


def test_needs_value_head_and_values():
    assert AWR(alpha=0.5, beta=10).needs_value_head
    with pytest.raises(ValueError, match="value head"):
        AWR(alpha=0.5, beta=10).loss(logits_from_probs(PROBS), torch.tensor(LABELS), torch.tensor(SCORES))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        run(values=torch.zeros(1, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.5, "beta": 1.0}, "alpha"),
        ({"alpha": -0.1, "beta": 1.0}, "alpha"),
        ({"alpha": 0.5, "beta": 0.0}, "beta"),
        ({"alpha": 0.5, "beta": 1.0, "clip_weight_max": -1}, "clip"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AWR(**kwargs)
