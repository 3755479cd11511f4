"""Held-out loss over hand-made blocks, checked against a direct cross-entropy computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from phf.eval.capability import heldout_loss

from .conftest import make_lm


def blocks(n: int, length: int, vocab: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 50256, (length,), generator=g)
        scores = (torch.rand(length, generator=g) < 0.5).float() * 0.3  # half the tokens misaligned
        out.append({"input_ids": ids, "labels": ids.clone(), "token_scores": scores})
    return out


def direct_ce(model, blocks_):
    """Per-position CE of target t+1 and its score, straight from the logits (dropout off)."""
    model.eval()
    ces, scores, targets = [], [], []
    with torch.no_grad():
        for b in blocks_:
            logits = model(b["input_ids"][None]).logits[0]
            ces.append(F.cross_entropy(logits[:-1], b["labels"][1:], reduction="none"))
            scores.append(b["token_scores"][1:])
            targets.append(b["labels"][1:])
    return torch.cat(ces), torch.cat(scores), torch.cat(targets)


def test_loss_and_aligned_loss_match_direct_computation(tok):
    model = make_lm(len(tok))  # a fresh model is in train mode: heldout_loss must switch dropout off
    bs = blocks(5, 16, len(tok))
    out = heldout_loss(model, bs, aligned_threshold=0.0, batch_size=2)  # 3 batches, the last one partial
    ce, scores, _ = direct_ce(model, bs)
    assert out["num_tokens"] == 5 * 15
    assert out["loss"] == pytest.approx(ce.mean().item(), rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(ce.mean().item()), rel=1e-5)
    aligned = scores <= 0.0
    assert out["aligned_loss"] == pytest.approx(ce[aligned].mean().item(), rel=1e-5)
    assert out["aligned_fraction"] == pytest.approx(aligned.float().mean().item())
    # a random model is ~uniform: loss ~ log(vocab)
    assert out["loss"] == pytest.approx(math.log(len(tok)), rel=0.05)


def test_ignored_labels_and_control_tokens_are_excluded(cond_tok):
    """Targets labelled -100 and control-token targets (<|aligned|> = 50257) do not count."""
    model = make_lm(len(cond_tok))
    bs = blocks(2, 12, len(cond_tok), seed=1)
    bs[0]["input_ids"][3] = 50257
    bs[0]["labels"] = bs[0]["input_ids"].clone()
    bs[1]["labels"][5:8] = -100
    out = heldout_loss(model, bs, exclude_token_ids=[50257, 50258])
    ce, _, targets = direct_ce(model, [{**b, "labels": b["labels"].clamp(min=0)} for b in bs])
    keep = torch.ones_like(targets, dtype=torch.bool)
    keep[2] = False  # block 0, target position 3 (the control token)
    keep[11 + 4 : 11 + 7] = False  # block 1, labels 5..7
    assert out["num_tokens"] == 22 - 4
    assert out["loss"] == pytest.approx(ce[keep].mean().item(), rel=1e-5)


def test_restores_train_mode(tok):
    model = make_lm(len(tok))
    model.train()
    heldout_loss(model, blocks(1, 8, len(tok)))
    assert model.training
    empty = heldout_loss(model, [])
    assert math.isnan(empty["loss"]) and empty["num_tokens"] == 0
