"""MLE: mean next-token cross-entropy over the predicted positions, with the causal shift."""

import math

import torch
from torch.testing import assert_close

from phf.objectives import IGNORE_INDEX, MLE


def logits_from_probs(probs):
    """Logits whose softmax is exactly ``probs`` (B, T, V)."""
    return torch.tensor(probs, dtype=torch.float32).log()


# B=1, T=4, V=2. Position t predicts labels[t+1]; the last position predicts nothing, so its logits
# are garbage on purpose.
PROBS = [[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1], [1e-6, 1.0]]]
LABELS = [[0, 1, 0, 1]]  # targets: pos0 -> 1 (p=0.5), pos1 -> 0 (p=0.25), pos2 -> 1 (p=0.1)
SCORES = [[9.0, 0.0, 0.5, 0.25]]  # MLE ignores scores


def test_mle_hand_computed():
    """CE = [log 2, log 4, log 10]; loss = (log 2 + log 4 + log 10) / 3 = log(80) / 3."""
    out = MLE().loss(logits_from_probs(PROBS), torch.tensor(LABELS), torch.tensor(SCORES))
    assert_close(out.loss, torch.tensor(math.log(80) / 3))
    assert_close(out.metrics["lm_loss"], torch.tensor(math.log(80) / 3))


def test_mle_ignores_masked_targets():
    """labels[2] = -100 drops position 1: loss = (log 2 + log 10) / 2 = log(20) / 2."""
    labels = torch.tensor([[0, 1, IGNORE_INDEX, 1]])
    out = MLE().loss(logits_from_probs(PROBS), labels, torch.tensor(SCORES))
    assert_close(out.loss, torch.tensor(math.log(20) / 2))


def test_mle_metrics_are_detached_and_loss_has_grad():
    logits = logits_from_probs(PROBS).requires_grad_()
    out = MLE().loss(logits, torch.tensor(LABELS), torch.tensor(SCORES))
    out.loss.backward()
    assert logits.grad is not None and torch.all(logits.grad[:, -1] == 0)  # last position predicts nothing
    assert all(not m.requires_grad and m.dim() == 0 for m in out.metrics.values())
