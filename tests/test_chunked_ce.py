"""trainer.chunked_ce: the LM head + per-token CE chunked over positions equals the plain path up to
float rounding (values and gradients), for every token objective's shift; off by default."""

import pytest
import torch
import torch.nn.functional as F

from phf.chunked_ce import HeadInput, chunked_token_ce
from phf.objectives import MLE, Unlikelihood
from phf.objectives.base import IGNORE_INDEX


def test_chunked_ce_equals_cross_entropy_with_ignored_positions():
    """5 positions, V 7, chunks of 2 (the last chunk has 1 row); position 3 ignored: CE 0, no gradient."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(5, 4, generator=g, requires_grad=True)
    weight = torch.randn(7, 4, generator=g, requires_grad=True)
    targets = torch.tensor([1, 6, 0, IGNORE_INDEX, 3])
    ours = chunked_token_ce(hidden, weight, targets, chunk=2, ignore_index=IGNORE_INDEX)
    ref_h, ref_w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_h @ ref_w.t(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    torch.testing.assert_close(ours, ref)
    assert ours[3] == 0
    w = torch.arange(1.0, 6.0)  # a non-uniform upstream gradient
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(hidden.grad, ref_h.grad)
    torch.testing.assert_close(weight.grad, ref_w.grad)
    assert torch.all(hidden.grad[3] == 0)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        chunked_token_ce(hidden, weight, targets, chunk=0)


@pytest.mark.parametrize("objective", [MLE(), Unlikelihood(threshold=0.0, alpha=1.0)])
def test_objective_loss_from_head_input_matches_logits(objective):
    """The same loss and gradients from HeadInput as from the (B, T, V) logits, padded labels included."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 6, 8, generator=g, requires_grad=True)
    weight = torch.randn(11, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (2, 6), generator=g)
    labels[1, 4:] = IGNORE_INDEX
    scores = torch.rand(2, 6, generator=g).round()
    ref_h, ref_w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ours = objective.loss(HeadInput(hidden, weight, chunk=5), labels, scores).loss
    ref = objective.loss(ref_h @ ref_w.t(), labels, scores).loss
    torch.testing.assert_close(ours, ref)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(hidden.grad, ref_h.grad)
    torch.testing.assert_close(weight.grad, ref_w.grad)


def test_trainer_key_is_checked():
    from phf.trainer import Trainer

    assert Trainer().chunked_ce == 0  # off by default: the regression pin is bit-exact
    with pytest.raises(ValueError, match="trainer.chunked_ce must be an integer >= 0"):
        Trainer(chunked_ce=-1)


def losses_of_tiny_run(run_dir, objective, extra=()):
    """Per-step losses of the regression pin's tiny run (one thread, seed 7), with ``extra`` overrides."""
    import json

    import torch

    from phf.train import train
    from tests.conftest import TINY, compose
    from tests.test_regression import STEPS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose(TINY + [f"objective={objective}", f"run_dir={run_dir}", f"trainer.max_steps={STEPS}",
                              "trainer.log_every=1", "seed=7", *extra]))
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_tiny_run_with_chunked_ce_follows_the_plain_run(tmp_path):
    """The pin's tiny AWR run (CE + value head): with chunks of 100 positions, every step's loss within
    float rounding of the plain path's (not bit-exact: the CE sums in another order)."""
    plain = losses_of_tiny_run(tmp_path / "plain", "awr")
    chunked = losses_of_tiny_run(tmp_path / "chunked", "awr", ["trainer.chunked_ce=100"])
    assert len(chunked) == len(plain) > 1
    assert chunked == pytest.approx(plain, rel=1e-4)
