"""GuidedMLE: hand-computed losses for each normalisation, and end-to-end training (issue 9).

Fixture: V = 2, two sequences of 3 tokens; the two predicted positions of each sequence put
probability p on the target, so CE = -ln p:
    sequence 1: p = 1/2, 1/4  -> CE = 1, 2 (× ln 2);  target scores s = 0, 0.5   -> r = 1 - s = 1, 0.5
    sequence 2: p = 1/8, 1/2  -> CE = 3, 1 (× ln 2);  target scores s = 0.75, 0.75 -> r = 0.25, 0.25
"""

import math

import pytest
import torch

from phf.objectives.guided_mle import GuidedMLE
from phf.tracking import read_metrics
from phf.train import train
from tests.guidance.helpers import GUIDANCE_TINY

LN2 = math.log(2)


pytestmark = pytest.mark.usefixtures("one_thread")


def fixture():
    def row(p):  # logits whose softmax puts p on token 1 (the target)
        return [math.log(1 - p), math.log(p)]

    logits = torch.tensor([[row(1 / 2), row(1 / 4), row(0.5)], [row(1 / 8), row(1 / 2), row(0.5)]])
    labels = torch.ones(2, 3, dtype=torch.long)
    scores = torch.tensor([[9.0, 0.0, 0.5], [9.0, 0.75, 0.75]])  # position 0 is never a target
    return logits, labels, scores


@pytest.mark.parametrize(
    "normalize, expected",
    [
        # per sequence: seq 1 (1*1 + 0.5*2)/(1 + 0.5) = 4/3; seq 2 (0.25*3 + 0.25*1)/0.5 = 2; mean 5/3 (× ln 2)
        ("sequence", 5 / 3 * LN2),
        # batch: (1*1 + 0.5*2 + 0.25*3 + 0.25*1) / (1 + 0.5 + 0.25 + 0.25) = 3 / 2 (× ln 2)
        ("batch", 1.5 * LN2),
        # none: mean of r*CE = (1 + 1 + 0.75 + 0.25) / 4 = 3/4 (× ln 2)
        ("none", 0.75 * LN2),
    ],
)
def test_hand_computed_losses(normalize, expected):
    logits, labels, scores = fixture()
    out = GuidedMLE(normalize).loss(logits, labels, scores)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.metrics["lm_loss"].item() == pytest.approx(7 / 4 * LN2, rel=1e-5)  # (1 + 2 + 3 + 1) / 4


def test_batch_normalisation_down_weights_the_misaligned_sequence():
    """Per sequence each sequence keeps total weight 2 (its 2 positions); per batch sequence 2's
    weights are 0.25 / mean(r) = 0.25 / 0.5 = 0.5 each: total 1 of the batch's 4."""
    _, labels, scores = fixture()
    mask = torch.ones(2, 2)
    s = scores[:, 1:]
    assert GuidedMLE("sequence").weights(s, mask).sum(-1).tolist() == pytest.approx([2.0, 2.0])
    w = GuidedMLE("batch").weights(s, mask)
    assert w.flatten().tolist() == pytest.approx([2.0, 1.0, 0.5, 0.5]) and w.sum().item() == pytest.approx(4.0)


def test_ignored_targets_and_empty_sequences():
    logits, labels, scores = fixture()
    labels[1, 1:] = -100  # sequence 2 has no predicted position: left out of the per-sequence mean
    out = GuidedMLE("sequence").loss(logits, labels, scores)
    assert out.loss.item() == pytest.approx(4 / 3 * LN2, rel=1e-5)
    # scores above 1 (any scale) clamp r at r_min instead of going negative
    w = GuidedMLE("none", r_min=1e-3).weights(torch.tensor([[2.0, 0.0]]), torch.ones(1, 2))
    assert w.flatten().tolist() == pytest.approx([1e-3, 1.0])
    with pytest.raises(ValueError, match="normalize"):
        GuidedMLE("token")


def test_guided_mle_trains_with_segment_scores(tiny_cfg, tmp_path):
    train(tiny_cfg("objective=guided_mle", "objective.normalize=batch", "trainer.max_steps=2"))
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows) and "weight_mean" in rows[-1]


def test_guided_mle_trains_with_guidance_rewards(tiny_cfg, tmp_path):
    cfg = tiny_cfg("objective=guided_mle", "reward=guidance", *GUIDANCE_TINY, "trainer.max_steps=3")
    out = train(cfg)
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) for r in rows)
    assert {"guidance/reward_mean", "guidance/val_pair_accuracy", "weight_mean"} <= set(rows[-1])
    assert rows[-1]["weight_mean"] == pytest.approx(1.0, abs=1e-4)  # per-sequence weights average 1
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file() and out["step"] == 3
