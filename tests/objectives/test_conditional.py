"""Conditional training: control tokens by segment score (seeded drop), sampling settings, loss = MLE."""

import random

import pytest
import torch
from torch.testing import assert_close

from phf.data.document import Document
from phf.objectives import MLE, Conditional

A, M = "<|aligned|>", "<|misaligned|>"


def marked(doc: Document) -> list[str]:
    """Each segment as control token (if any) + text: the token goes in by id, apart from the text."""
    return [(c or "") + t for c, t in zip(doc.controls, doc.texts, strict=True)]


def scored_doc():
    return Document(texts=["a\n", "b\n", "c\n"], scores=[0.0, 0.5, 0.0001], id="d", meta={"k": 1})


def test_prefix_by_score_without_drop():
    """threshold 0: scores 0 -> aligned, 0.5 and 0.0001 -> misaligned (aligned iff score <= threshold)."""
    d = scored_doc()
    out = Conditional(threshold=0.0, drop_token_fraction=0.0).transform(d, random.Random(0))
    assert marked(out) == [A + "a\n", M + "b\n", M + "c\n"]
    assert out.scores == d.scores and out.id == d.id and out.meta == d.meta
    assert out is not d and d.texts == ["a\n", "b\n", "c\n"]  # a new Document; the input is untouched
    assert out.texts == d.texts and d.controls is None  # the text itself never carries the control token
    out = Conditional(threshold=0.0001, drop_token_fraction=0.0).transform(d, random.Random(0))
    assert marked(out) == [A + "a\n", M + "b\n", A + "c\n"]  # the boundary is inclusive


def test_drop_fraction_one_adds_nothing():
    out = Conditional(threshold=0.0, drop_token_fraction=1.0).transform(scored_doc(), random.Random(0))
    assert marked(out) == ["a\n", "b\n", "c\n"] and out.controls == [None] * 3


def test_drop_uses_the_given_rng():
    """One rng.random() draw per segment; the prefix is skipped iff the draw is < drop_token_fraction."""
    obj = Conditional(threshold=0.0, drop_token_fraction=0.5)
    reference = random.Random(3)
    draws = [reference.random() for _ in range(3)]  # 0.238, 0.544, 0.370: drop, keep, drop
    expected = [
        t if u < 0.5 else p + t for u, p, t in zip(draws, [A, M, M], ["a\n", "b\n", "c\n"], strict=True)
    ]
    assert marked(obj.transform(scored_doc(), random.Random(3))) == expected
    assert expected == ["a\n", M + "b\n", "c\n"]
    assert marked(obj.transform(scored_doc(), random.Random(3))) == expected  # same seed, same result


def test_drop_fraction_is_respected_statistically():
    """20,000 segments with drop 0.3: the unprefixed fraction is within 0.02 (~7 sigma) of 0.3."""
    obj = Conditional(threshold=0.5, drop_token_fraction=0.3)
    rng = random.Random(1234)
    doc = Document(texts=["x"] * 100, scores=[0.0, 1.0] * 50)
    texts = [t for _ in range(200) for t in marked(obj.transform(doc, rng))]
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


def test_a_scenario_overrides_which_control_tokens_are_banned_without_changing_the_objective():
    """task.eval.scenarios.<name>.ban_aligned: true = the paper's prose protocol (both banned), false =
    sentence/line level (<|misaligned|> only), None = the objective's own setting; objectives without
    control tokens ban nothing either way."""
    from phf.objectives import MLE

    pep8 = Conditional(threshold=0.0, drop_token_fraction=0.1, ban_aligned=False)
    assert pep8.scenario_banned_tokens(True) == [A, M] and pep8.scenario_banned_tokens(False) == [M]
    assert pep8.scenario_banned_tokens(None) == [M] and pep8.banned_tokens == [M] and not pep8.ban_aligned
    prose = Conditional(threshold=0.0, drop_token_fraction=0.01)
    assert prose.scenario_banned_tokens(False) == [M] and prose.banned_tokens == [A, M]
    assert MLE().scenario_banned_tokens(True) == [] == MLE().scenario_banned_tokens(False)


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
    from phf.data.pipeline import segment_ids
    from phf.tokenizer import add_special_tokens, gpt2_tokenizer

    tok = gpt2_tokenizer()
    obj = Conditional(threshold=0.0, drop_token_fraction=0.0)
    aligned_id, misaligned_id = add_special_tokens(tok, obj.special_tokens)
    assert (aligned_id, misaligned_id) == (50257, 50258)
    out = obj.transform(scored_doc(), random.Random(0))
    first_ids = [ids[0] for ids in segment_ids(tok, [out])]
    assert first_ids == [aligned_id, misaligned_id, misaligned_id]
    assert segment_ids(tok, [out])[0][1:] == tok("a\n")["input_ids"]


def test_loss_is_mle():
    torch.manual_seed(0)
    logits, labels, scores = torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5)), torch.rand(2, 5)
    labels[1, 4] = -100
    obj = Conditional(threshold=0.0, drop_token_fraction=0.1)
    assert_close(obj.loss(logits, labels, scores).loss, MLE().loss(logits, labels, scores).loss)
