"""Unlikelihood: a_t * CE_t - alpha * (1 - a_t) * log(max(1 - p_t, 1e-20)), a_t from the target's score."""

import math

import pytest
import torch
from torch.testing import assert_close

from phf.objectives import IGNORE_INDEX, Unlikelihood


def logits_from_probs(probs):
    return torch.tensor(probs, dtype=torch.float32).log()


# B=1, T=4, V=2; targets: pos0 -> 1 (p=0.5), pos1 -> 0 (p=0.25), pos2 -> 1 (p=0.1); pos3 predicts nothing.
PROBS = [[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1], [0.5, 0.5]]]
LABELS = [[0, 1, 0, 1]]
SCORES = [[9.0, 0.0, 0.5, 0.0]]  # target scores s = [0, 0.5, 0]; scores[0] = 9 must never be read
LN = math.log


def test_thresholded_hand_computed():
    """threshold 0.1, alpha 0.5: a = [1, 0, 1].
    terms = [log 2, -0.5 * log(1 - 0.25), log 10]; loss = (log 2 - 0.5 log 0.75 + log 10) / 3."""
    out = Unlikelihood(threshold=0.1, alpha=0.5).loss(
        logits_from_probs(PROBS), torch.tensor(LABELS), torch.tensor(SCORES)
    )
    assert_close(out.loss, torch.tensor((LN(2) - 0.5 * LN(0.75) + LN(10)) / 3))
    assert_close(out.metrics["likelihood_loss"], torch.tensor((LN(2) + LN(10)) / 3))
    assert_close(out.metrics["unlikelihood_loss"], torch.tensor(-LN(0.75) / 3))
    assert_close(out.metrics["lm_loss"], torch.tensor((LN(2) + LN(4) + LN(10)) / 3))
    assert_close(out.metrics["aligned_token_fraction"], torch.tensor(2 / 3))
    assert_close(out.metrics["avg_token_score"], torch.tensor(0.5 / 3))


def test_ignored_positions_are_excluded():
    """labels[3] = -100 drops pos2: loss = (log 2 - 0.5 log 0.75) / 2; aligned fraction 1/2."""
    labels = torch.tensor([[0, 1, 0, IGNORE_INDEX]])
    out = Unlikelihood(threshold=0.1, alpha=0.5).loss(logits_from_probs(PROBS), labels, torch.tensor(SCORES))
    assert_close(out.loss, torch.tensor((LN(2) - 0.5 * LN(0.75)) / 2))
    assert_close(out.metrics["aligned_token_fraction"], torch.tensor(0.5))


def test_soft_weights():
    """soft, alpha 0.5: a = 1 - s = [1, 0.5, 1].
    pos1 term = 0.5 * log 4 - 0.5 * 0.5 * log 0.75; loss = (log 2 + 0.5 log 4 - 0.25 log 0.75 + log 10) / 3."""
    out = Unlikelihood(threshold=None, alpha=0.5, soft=True).loss(
        logits_from_probs(PROBS), torch.tensor(LABELS), torch.tensor(SCORES)
    )
    assert_close(out.loss, torch.tensor((LN(2) + 0.5 * LN(4) - 0.25 * LN(0.75) + LN(10)) / 3))
    assert_close(out.metrics["aligned_token_fraction"], torch.tensor(2.5 / 3))


def test_threshold_zero_is_hard_not_the_original_soft_quirk():
    """The original switched to soft weights when threshold was 0; here threshold 0 is a hard threshold:
    s = [0, 0.5, 0] -> a = [1, 0, 1], the same as threshold 0.1 above."""
    args = logits_from_probs(PROBS), torch.tensor(LABELS), torch.tensor(SCORES)
    hard = Unlikelihood(threshold=0.0, alpha=0.5).loss(*args)
    assert_close(hard.loss, torch.tensor((LN(2) - 0.5 * LN(0.75) + LN(10)) / 3))
    assert not torch.isclose(hard.loss, Unlikelihood(threshold=0.0, alpha=0.5, soft=True).loss(*args).loss)


def test_log_one_minus_p_is_floored_with_finite_gradient():
    """p(target) = 1 - e^-100 (1 - p underflows below 1e-20): the term is -log(1e-20) = 46.05 with zero gradient.
    B=1, T=2: the only position predicts token 0 with logits [100, 0], score 1 (misaligned), alpha 1."""
    logits = torch.tensor([[[100.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    out = Unlikelihood(threshold=0.5, alpha=1.0).loss(
        logits, torch.tensor([[1, 0]]), torch.tensor([[0.0, 1.0]])
    )
    assert_close(out.loss, torch.tensor(-LN(1e-20)))
    out.loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_gradient_pushes_misaligned_probability_down():
    """For a misaligned target the loss is -alpha * log(1 - p): increasing the target logit increases the loss."""
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    Unlikelihood(threshold=0.0, alpha=1.0).loss(
        logits, torch.tensor([[0, 2]]), torch.tensor([[0.0, 1.0]])
    ).loss.backward()
    assert logits.grad[0, 0, 2] > 0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"threshold": None, "alpha": 1.0}, "threshold"), ({"threshold": 0.0, "alpha": -1.0}, "alpha")],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Unlikelihood(**kwargs)
