"""Conditional training: control tokens by segment score (seeded drop), sampling settings, loss = MLE."""

import random

import pytest
import torch
from torch.testing import assert_close

from phf.data.document import Document
from phf.objectives import MLE, Conditional

A, M = "<|aligned|>", "<|misaligned|>"


def scored_doc():
    return Document(texts=["a\n", "b\n", "c\n"], scores=[0.0, 0.5, 0.0001], id="d", meta={"k": 1})


def test_prefix_by_score_without_drop():
    """threshold 0: scores 0 -> aligned, 0.5 and 0.0001 -> misaligned (aligned iff score <= threshold)."""
    d = scored_doc()
    out = Conditional(threshold=0.0, drop_token_fraction=0.0).transform(d, random.Random(0))
    assert out.texts == [A + "a\n", M + "b\n", M + "c\n"]
    assert out.scores == d.scores and out.id == d.id and out.meta == d.meta
    assert out is not d and d.texts == ["a\n", "b\n", "c\n"]  # a new Document; the input is untouched
    out = Conditional(threshold=0.0001, drop_token_fraction=0.0).transform(d, random.Random(0))
    assert out.texts == [A + "a\n", M + "b\n", A + "c\n"]  # the boundary is inclusive


def test_drop_fraction_one_adds_nothing():
    out = Conditional(threshold=0.0, drop_token_fraction=1.0).transform(scored_doc(), random.Random(0))
    assert out.texts == ["a\n", "b\n", "c\n"]


def test_drop_uses_the_given_rng():
    """One rng.random() draw per segment; the prefix is skipped iff the draw is < drop_token_fraction."""
    obj = Conditional(threshold=0.0, drop_token_fraction=0.5)
    reference = random.Random(3)
    draws = [reference.random() for _ in range(3)]  # 0.238, 0.544, 0.370: drop, keep, drop
    expected = [
        t if u < 0.5 else p + t for u, p, t in zip(draws, [A, M, M], ["a\n", "b\n", "c\n"], strict=True)
    ]
    assert obj.transform(scored_doc(), random.Random(3)).texts == expected
    assert expected == ["a\n", M + "b\n", "c\n"]
    assert obj.transform(scored_doc(), random.Random(3)).texts == expected  # same seed, same result


def test_drop_fraction_is_respected_statistically():
    """20,000 segments with drop 0.3: the unprefixed fraction is within 0.02 (~7 sigma) of 0.3."""
    obj = Conditional(threshold=0.5, drop_token_fraction=0.3)
    rng = random.Random(1234)
    doc = Document(texts=["x"] * 100, scores=[0.0, 1.0] * 50)
    texts = [t for _ in range(200) for t in obj.transform(doc, rng).texts]
    assert abs(texts.count("x") / len(texts) - 0.3) < 0.02
    assert texts.count(A + "x") > 0 and texts.count(M + "x") > 0


def test_special_tokens_prefix_and_bans():
    prose = Conditional(threshold=0.00056, drop_token_fraction=0.01)
    assert prose.special_tokens == [A, M]
    assert prose.generation_prefix == [A]
    assert prose.banned_tokens == [A, M]
    pep8 = Conditional(threshold=0.0, drop_token_fraction=0.1, ban_aligned=False)
    assert pep8.banned_tokens == [M]
    custom = Conditional(0.0, 0.0, aligned_token="<good>", misaligned_token="<bad>")
    assert custom.special_tokens == ["<good>", "<bad>"] and custom.generation_prefix == ["<good>"]
    assert not prose.needs_value_head


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": None, "drop_token_fraction": 0.1}, "threshold"),
        ({"threshold": 0.0, "drop_token_fraction": 1.5}, "drop_token_fraction"),
        ({"threshold": 0.0, "drop_token_fraction": -0.1}, "drop_token_fraction"),
        ({"threshold": 0.0, "drop_token_fraction": 0.1, "misaligned_token": A}, "distinct"),
        ({"threshold": 0.0, "drop_token_fraction": 0.1, "aligned_token": ""}, "distinct"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conditional(**kwargs)


def test_unscored_document_raises():
    with pytest.raises(ValueError, match="scores"):
        Conditional(0.0, 0.0).transform(Document(texts=["x"], id="d1"), random.Random(0))


def test_control_tokens_tokenize_as_one_id_at_segment_start():
    """Per-segment tokenization (as the packer does it) puts the control token's id first."""
    from phf.tokenizer import add_special_tokens, gpt2_tokenizer

    tok = gpt2_tokenizer()
    obj = Conditional(threshold=0.0, drop_token_fraction=0.0)
    aligned_id, misaligned_id = add_special_tokens(tok, obj.special_tokens)
    assert (aligned_id, misaligned_id) == (50257, 50258)
    out = obj.transform(scored_doc(), random.Random(0))
    first_ids = [tok(t, add_special_tokens=False)["input_ids"][0] for t in out.texts]
    assert first_ids == [aligned_id, misaligned_id, misaligned_id]
    assert tok(out.texts[0], add_special_tokens=False)["input_ids"][1:] == tok("a\n")["input_ids"]


def test_loss_is_mle():
    torch.manual_seed(0)
    logits, labels, scores = torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5)), torch.rand(2, 5)
    labels[1, 4] = -100
    obj = Conditional(threshold=0.0, drop_token_fraction=0.1)
    assert_close(obj.loss(logits, labels, scores).loss, MLE().loss(logits, labels, scores).loss)
