"""Localisation AUROC: ground truth from pycodestyle's line/column and from character spans."""

import pytest
import torch

from phf.data.document import Document
from phf.guidance.localisation import (
    auroc,
    localisation,
    pep8_localisation,
    pep8_offending_spans,
    pii_localisation,
    token_labels,
    tokenize_segments,
)
from phf.scorers import PEP8Scorer
from phf.tokenizer import gpt2_tokenizer


def test_auroc_by_hand():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5, 0.5], [0, 1, 0]) == pytest.approx(0.5)  # ties count 1/2
    assert auroc([0.2, 0.1], [1, 0]) == 1.0
    assert auroc([0.2, 0.1], [1, 1]) != auroc([0.2, 0.1], [1, 1])  # NaN with one class


def test_pep8_violation_marks_its_token():
    tok, scorer = gpt2_tokenizer(), PEP8Scorer()
    segments = ["x = 1\n", "y=2\n"]  # E225 missing whitespace around operator at line 2, column 1: '='
    text = "".join(segments)
    spans = pep8_offending_spans(text, scorer)
    assert spans == [(7, 8)] and text[7] == "="
    ids, tspans, seg = tokenize_segments(tok, segments)
    assert ids[0] == tok.eos_token_id and seg[0] == -1 and tspans[0] == (0, 0)
    labels = token_labels(tspans, spans)
    assert [text[a:b] for (a, b), lab in zip(tspans, labels, strict=True) if lab] == ["="]
    assert tok.decode(ids[1:]) == text and seg[1:] == [0] * 4 + [1] * 4


def test_pii_character_spans_mark_overlapping_tokens():
    tok = gpt2_tokenizer()
    text = "Call Jane Roe at 555-0100 today."
    start = text.index("555")
    _, tspans, _ = tokenize_segments(tok, [text])
    labels = token_labels(tspans, [(start, start + 8)])
    marked = "".join(text[a:b] for (a, b), lab in zip(tspans, labels, strict=True) if lab)
    assert marked.strip() == "555-0100"


class _Oracle:
    """A stand-in learner: reward 0.1 on '=' tokens, 0.9 elsewhere."""

    eos = 50256

    def __init__(self, tok):
        self.eq = tok.convert_tokens_to_ids("=")

    def rewards(self, ids):
        return torch.where(ids == self.eq, 0.1, 0.9)


def test_localisation_of_an_oracle_and_of_broadcast_scores():
    tok, scorer = gpt2_tokenizer(), PEP8Scorer()
    segments = ["a = 1\n", "b=2\n", "c = 3\n"]
    doc = Document(segments, scorer.score_document(segments))
    out = localisation(_Oracle(tok), [doc], tok, lambda d: pep8_offending_spans(d.text, scorer), block_size=4)
    # only the violating line's '=' is positive; the clean lines' ' =' is another token, so the oracle is exact
    assert out["guidance_token_auroc"] == 1.0
    assert out["broadcast_segment_auroc"] == 1.0  # broadcast = the line's score: exact at line level
    assert out["broadcast_token_auroc"] < 1.0  # but it cannot tell '=' from 'b' on the same line
    assert out["tokens"] == len(tokenize_segments(tok, segments)[0]) - 1
    assert pep8_localisation(_Oracle(tok), [doc], tok, scorer, block_size=4) == out


class _Digits:
    """A stand-in learner: reward 0.1 on tokens made of digits and dashes, 0.9 elsewhere."""

    eos = 50256

    def __init__(self, tok):
        self.bad = torch.tensor([i for t, i in tok.get_vocab().items() if t.strip("Ġ") and set(t.strip("Ġ")) <= set("0123456789-")])

    def rewards(self, ids):
        return torch.where(torch.isin(ids, self.bad), 0.1, 0.9)


def test_pii_localisation_from_ground_truth_records():
    tok = gpt2_tokenizer()
    text = "Call Jane at 555-0100 today. Nothing here."
    doc = Document(["Call Jane at 555-0100 today.", " Nothing here."], [0.5, 0.0], id="local_pii[3]")
    clean = Document(["No personal data in 2024."], [0.0], id="local_pii[4]")
    start = text.index("555")
    truth = [{"doc_id": "local_pii[3]", "doc_index": 3, "start": start, "end": start + 8, "entity_type": "PHONE_NUMBER",
              "value": "555-0100"}]
    out = pii_localisation(_Digits(tok), [doc, clean], tok, truth, block_size=8)
    assert out["docs"] == 2 and out["positive_token_fraction"] > 0
    # the digits learner flags the phone number but also "2024" in the clean document: AUROC < 1
    assert 0.8 < out["guidance_token_auroc"] < 1.0
