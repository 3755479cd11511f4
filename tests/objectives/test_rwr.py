"""RWR: mean of min(exp(r_t / beta), clip) * CE_t with r_t = -s_t; no value head, no baseline."""

import math

import pytest
import torch
from torch.testing import assert_close

from phf.objectives import IGNORE_INDEX, RWR


def logits_from_probs(probs):
    return torch.tensor(probs, dtype=torch.float32).log()


# B=1, T=4, V=2; CE at pos0..2 = [log 2, log 4, log 10]; pos3 predicts nothing.
PROBS = [[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1], [0.5, 0.5]]]
LABELS = [[0, 1, 0, 1]]
SCORES = [[9.0, 0.0, 0.5, -10.0]]  # target scores s = [0, 0.5, -10] -> r = [0, -0.5, 10]
LN = math.log


def test_hand_computed_with_clip():
    """beta 0.5: w = [exp(0), exp(-1), min(exp(20), 1000) = 1000].
    loss = (log 2 + e^-1 log 4 + 1000 log 10) / 3; weight_mean = (1 + e^-1 + 1000) / 3."""
    out = RWR(beta=0.5).loss(logits_from_probs(PROBS), torch.tensor(LABELS), torch.tensor(SCORES))
    assert_close(out.loss, torch.tensor((LN(2) + math.exp(-1) * LN(4) + 1000 * LN(10)) / 3))
    assert_close(out.metrics["weighted_lm_loss"], out.loss.detach())
    assert_close(out.metrics["weight_mean"], torch.tensor((1 + math.exp(-1) + 1000) / 3))
    assert_close(out.metrics["lm_loss"], torch.tensor(LN(80) / 3))


def test_ignored_positions_and_no_baseline():
    """labels[3] = -100 drops pos2; beta 10: loss = (log 2 + e^-0.05 log 4) / 2.
    The original's hidden baseline (V = -0.5) would have given e^0.05 times this."""
    labels = torch.tensor([[0, 1, 0, IGNORE_INDEX]])
    out = RWR(beta=10.0).loss(logits_from_probs(PROBS), labels, torch.tensor(SCORES))
    assert_close(out.loss, torch.tensor((LN(2) + math.exp(-0.05) * LN(4)) / 2))


def test_no_value_head_and_values_ignored():
    args = logits_from_probs(PROBS), torch.tensor(LABELS), torch.tensor(SCORES)
    assert not RWR(beta=10.0).needs_value_head
    assert_close(
        RWR(beta=10.0).loss(*args, values=torch.full((1, 4), -0.5)).loss, RWR(beta=10.0).loss(*args).loss
    )


def test_huge_reward_does_not_overflow():
    out = RWR(beta=1e-3).loss(torch.zeros(1, 2, 2), torch.tensor([[0, 1]]), torch.tensor([[0.0, -1e6]]))
    assert_close(out.loss, torch.tensor(1000 * LN(2)))


@pytest.mark.parametrize(
    "kwargs, match", [({"beta": 0.0}, "beta"), ({"beta": 1.0, "clip_weight_max": 0}, "clip")]
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RWR(**kwargs)
