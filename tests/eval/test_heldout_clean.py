"""Clean held-out loss: renormalisation over control tokens, excluded control positions, windows, the
same token set for every objective, and which held-out documents count as clean."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from phf.data.document import Document
from phf.data.pipeline import Data, in_validation
from phf.data.sources import JsonlSource
from phf.eval.heldout_clean import (
    bootstrap_ratio,
    clean_heldout_documents,
    clean_heldout_loss,
    sampling_format,
    window_losses,
    windows,
)
from phf.objectives import MLE, Conditional

from .conftest import make_lm


class FixedLM(torch.nn.Module):
    """Same logits (0, 0, log 2) at every position over the vocabulary {a=0, b=1, <|aligned|>=2}:
    p = (1/4, 1/4, 1/2)."""

    config = SimpleNamespace(n_positions=16)

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.tensor([0.0, 0.0, math.log(2.0)]).expand(*input_ids.shape, 3).clone()
        return SimpleNamespace(logits=logits + 0 * self.w)


def test_renormalising_over_the_banned_control_token_by_hand():
    """Renormalised p(a) = (1/4) / (1 - 1/2) = 1/2: loss log 2 per text token; plain softmax: log 4.
    Window ``b a ctl a`` with weights (0, 1, 0, 1): two scored tokens (a, a), the control token (the
    context of the last a) is not scored: sum 2 log 2 renormalised, 2 log 4 plain."""
    window = ([1, 0, 2, 0], [0, 1, 0, 1])
    (s, n), = window_losses(FixedLM(), [window], exclude_ids=[2], pad_id=1)
    assert n == 2 and s == pytest.approx(2 * math.log(2))
    (s, n), = window_losses(FixedLM(), [window], exclude_ids=[], pad_id=1)
    assert n == 2 and s == pytest.approx(2 * math.log(4))


def test_windows_put_the_prefix_first_and_before_segments_only_with_line_level_conditioning():
    segs = [[5, 6, 7], [8]]
    # prose: EOS + <|aligned|> (9) at the start of each window only; 2 text tokens per window
    assert windows(segs, [0, 9], [], 2, None) == [([0, 9, 5, 6], [0, 0, 1, 1]), ([0, 9, 7, 8], [0, 0, 1, 1])]
    # line level: the prefix also before a segment that starts inside a window, never scored
    assert windows(segs, [0, 9], [9], 8, None) == [([0, 9, 5, 6, 7, 9, 8], [0, 0, 1, 1, 1, 0, 1])]
    # a context of 6 positions closes the window before [9, 8] would overflow it
    assert windows(segs, [0, 9], [9], 8, 6) == [([0, 9, 5, 6, 7], [0, 0, 1, 1, 1]), ([0, 9, 8], [0, 0, 1])]
    with pytest.raises(ValueError, match="window_tokens"):
        windows(segs, [0], [], 0, None)


def test_sampling_format_follows_the_objective():
    assert sampling_format(MLE()) == ([], False)
    assert sampling_format(Conditional(0.0, 0.01, ban_aligned=True)) == (["<|aligned|>"], False)
    assert sampling_format(Conditional(0.0, 0.1, ban_aligned=False)) == (["<|aligned|>"], True)


DOCS = [Document(["The cat sat on the mat. ", "It was warm."], None, id="d0"),
        Document(["A second document, a little longer than the first one. ", "Two sentences."], None, id="d1"),
        Document(["Third."], None, id="d2")]


def test_every_objective_is_scored_on_the_same_tokens_and_only_those(tok, cond_tok):
    """MLE and conditional score the same text tokens; the conditional model's loss equals a direct
    computation with <|aligned|> as context and the two control logits removed."""
    mle = clean_heldout_loss(make_lm(len(tok)), tok, MLE(), DOCS, window_tokens=8, batch_size=2, resamples=200)
    cond_model = make_lm(len(cond_tok), seed=3)
    cond = clean_heldout_loss(cond_model, cond_tok, Conditional(0.0, 0.01), DOCS, window_tokens=1000,
                              batch_size=2, resamples=200)
    n_text = sum(len(ids) for d in DOCS for ids in tok(d.texts, add_special_tokens=False)["input_ids"])
    assert mle["num_tokens"] == cond["num_tokens"] == n_text and mle["num_docs"] == cond["num_docs"] == 3
    # direct: one window per document (window_tokens 1000), context EOS <|aligned|>
    total = 0.0
    cond_model.eval()
    with torch.no_grad():
        for d in DOCS:
            text = [i for ids in cond_tok(d.texts, add_special_tokens=False)["input_ids"] for i in ids]
            ids = torch.tensor([[50256, 50257, *text]])
            logits = cond_model(ids).logits[0, :-1].clone()
            logits[:, [50257, 50258]] = float("-inf")
            logp = torch.log_softmax(logits, -1)[1:]  # predictions of the text tokens
            total -= logp.gather(-1, torch.tensor(text)[:, None]).sum().item()
    assert cond["loss"] == pytest.approx(total / n_text, rel=1e-5)
    assert cond["ppl"] == pytest.approx(math.exp(cond["loss"]))
    assert cond["loss_ci_low"] <= cond["loss"] <= cond["loss_ci_high"]


def test_bootstrap_ratio_resamples_documents_and_needs_two():
    low, high = bootstrap_ratio([2.0, 6.0, 4.0], [1.0, 2.0, 2.0], 0.95, 500, 0)
    assert 2.0 <= low <= 8 / 3 <= high <= 3.0  # ratio of sums lies between the per-document ratios
    assert all(math.isnan(x) for x in bootstrap_ratio([1.0], [1.0], 0.95, 100, 0))


class _Injected:
    """A source with a clean version (row i = document i before injection), like _InjectedSource."""

    def __init__(self, injected: list[Document], clean: list[Document]):
        self.injected, self.clean = injected, clean

    def clean_documents(self):
        return self.clean

    def iter_from(self, start):
        yield from self.injected[start:]


def _seg(text):
    return [s + "." for s in text.split(".") if s]


def test_injected_corpus_gives_the_clean_version_of_exactly_the_held_out_documents():
    clean = [Document([f"Plain sentence {i}. Another one."], None, id=f"p[{i}]") for i in range(40)]
    injected = [Document([f"Plain sentence {i}. Mail me at x{i}@example.com. Another one."], None, id=f"i[{i}]")
                for i in range(40)]
    data = Data(source=_Injected(injected, clean), val_fraction=0.3)
    got = clean_heldout_documents(data, _seg, None, None, 8, 0.0)
    held = [i for i, d in enumerate(injected) if in_validation(d, 0.3)]
    assert 0 < len(held) < 40
    assert [d.id for d in got] == [f"p[{i}]" for i in held]
    assert got[0].texts == _seg(clean[held[0]].texts[0])  # segmented clean text, no injected sentence
    assert len(clean_heldout_documents(data, _seg, None, None, 8, 0.0, max_docs=1)) == 1


def test_generic_corpus_keeps_held_out_documents_whose_every_segment_is_aligned(tmp_path, tok):
    rows = [{"texts": [f"doc {i} a", f"doc {i} b"], "scores": [0.0, 0.2 if i % 2 else 0.0]} for i in range(60)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({**r, "avg_score": sum(r["scores"]) / 2}) + "\n" for r in rows))
    data = Data(source=JsonlSource(str(path)), val_fraction=0.5)
    got = clean_heldout_documents(data, _seg, None, tok, 8, 0.0)
    held = [i for i, r in enumerate(rows) if in_validation(Document(r["texts"], r["scores"]), 0.5)]
    assert [d.texts[0] for d in got] == [f"doc {i} a" for i in held if i % 2 == 0]
    assert got and all(max(d.scores) <= 0.0 for d in got)
