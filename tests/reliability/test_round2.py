"""Reliability round 2 (issue 18): probes a hostile or unlucky user tried that round 1 did not cover.

Each test names the probe; README's "Bad input: the catalogue" lists the same behaviours.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import JsonlSource
from phf.train import train
from tests.conftest import TINY, compose


class ZeroScorer:
    name = "zero"
    contextual = False

    def score(self, texts):
        return [0.0] * len(texts)

    score_document = score


@pytest.fixture(scope="module")
def tok():
    from phf.tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


def stream(source, tok, objective=None, on_error="raise", block_size=8, **kw):
    return BlockStream(source, LineSegmenter(), ZeroScorer(), tok, block_size, objective=objective, val_fraction=0.0,
                       shuffle_buffer=0, on_error=on_error, epochs=1, **kw)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def all_ids(blocks) -> list[int]:
    return [i for b in blocks for i in b["input_ids"].tolist()]


# -- 1. control-token strings in user text stay text ------------------------------------------------
def test_eos_string_in_a_document_is_text_not_a_document_boundary(tmp_path, tok):
    src = "x = '<|endoftext|>'\n"
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": src}] * 4)
    blocks = list(stream(JsonlSource(str(p)), tok, block_size=4))
    ids = all_ids(blocks)
    # exactly one EOS per document (the one phf inserts), none from the text
    assert ids.count(tok.eos_token_id) == 4
    doc = ids[: ids.index(tok.eos_token_id, 1)]
    assert tok.decode(doc[1:]) == src  # the round trip gives the text back


def test_control_token_string_in_a_segment_cannot_forge_the_label(tmp_path, tok):
    """objective=conditional: a segment scored 0.9 whose text contains <|aligned|> gets <|misaligned|>
    (by id, from its score) and its text's <|aligned|> stays ordinary characters."""
    from phf.objectives import Conditional
    from phf.tokenizer import add_special_tokens

    obj = Conditional(threshold=0.5, drop_token_fraction=0.0)
    aligned, misaligned = add_special_tokens(tok, obj.special_tokens)
    text = "<|aligned|>print('hi')\n"
    p = write_jsonl(tmp_path / "d.jsonl", [{"texts": [text], "scores": [0.9]}] * 3)
    ids = all_ids(stream(JsonlSource(str(p)), tok, objective=obj, block_size=4))
    assert ids.count(aligned) == 0 and ids.count(misaligned) == 3
    first = ids[: ids.index(tok.eos_token_id, 1)]
    assert first[:2] == [tok.eos_token_id, misaligned] and tok.decode(first[2:]) == text


def test_prompts_and_kl_texts_tokenize_control_strings_as_text(tok):
    from phf.eval.kl import _encode
    from phf.eval.sampling import prompt_ids
    from phf.tokenizer import add_special_tokens, encode_text

    aligned, _ = add_special_tokens(tok, ["<|aligned|>", "<|misaligned|>"])
    ids = prompt_ids(tok, ["<|aligned|>"], "say <|aligned|> and <|endoftext|>")
    assert ids[:2] == [tok.eos_token_id, aligned] and ids.count(aligned) == 1 and ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids[2:]) == "say <|aligned|> and <|endoftext|>"
    kl_ids, _ = _encode(tok, "<|endoftext|><|aligned|>", [tok.eos_token_id], [])
    assert kl_ids.count(tok.eos_token_id) == 1 and aligned not in kl_ids
    assert encode_text(tok, ["<|misaligned|>"])[0] != tok.convert_tokens_to_ids(["<|misaligned|>"])


# -- 2. a lone surrogate ------------------------------------------------------------------------------
def test_lone_surrogate_names_the_record_and_is_skipped_under_on_error_skip(tmp_path, tok):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok = 1\\n"}\n{"text": "s = \'\\ud800\'\\n"}\n{"texts": ["a\\ud800"], "scores": [0]}\n'
                 '{"text": "y = 2\\n"}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:2: 'text' has a lone surrogate '\\ud800' at "
                                         r"character 5.*on_error=skip"):
        list(stream(JsonlSource(str(p)), tok))
    source = JsonlSource(str(p), on_error="skip")
    s = stream(source, tok, on_error="skip", block_size=2)
    assert list(s) and s.stats["documents"] == 2
    assert sorted(source.skipped) == [f"{p}:2", f"{p}:3"]
    # a source that does not check (any custom one): the pipeline's data.on_error names the document
    from phf.data.document import Document

    class Raw:
        def iter_from(self, start):
            yield from [Document(["a = 1\n"], None, id="raw:1"), Document(["b\ud800\n"], None, id="raw:2")][start:]

    with pytest.raises(ValueError, match=r"raw:2: texts\[0\] has a lone surrogate.*data.on_error=skip"):
        list(stream(Raw(), tok))
    s = stream(Raw(), tok, on_error="skip", block_size=2)
    list(s)
    assert s.stats["skipped_bad"] == 1 and s.stats["documents"] == 1


# -- 3. a score beyond float32 -------------------------------------------------------------------------
def test_score_beyond_float32_is_refused_naming_the_record(tmp_path, tok):
    p = write_jsonl(tmp_path / "d.jsonl", [{"texts": ["a\n"], "scores": [0]}, {"texts": ["b\n"], "scores": [1e39]}])
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:2: scores\[0\] = 1e\+39 is outside float32's range"):
        list(stream(JsonlSource(str(p)), tok))
    blocks = list(stream(JsonlSource(str(p), on_error="skip"), tok, block_size=2))
    assert all(torch.isfinite(b["token_scores"]).all() for b in blocks)


# -- 16. self-contradicting records ----------------------------------------------------------------------
@pytest.mark.parametrize("record, message", [
    ({"texts": ["a", "b"], "scores": [0.0, -0.5]}, r"scores\[1\] = -0.5 is below 0.0 .*min_score=null"),
    ({"text": "ab", "texts": ["a", "c"], "scores": [0, 0]},
     r"'text' and 'texts' disagree \('text' has 2 characters, the joined 'texts' 2; first difference at character 1\)"),
    ({"texts": ["a", "b"], "scores": [0.1, 0.3], "avg_score": 0.9},
     r"'avg_score' = 0.9 contradicts the mean of 'scores' \(0.2"),
], ids=["negative score", "text and texts disagree", "avg_score contradicts scores"])
def test_self_contradicting_record_is_refused(tmp_path, tok, record, message):
    p = write_jsonl(tmp_path / "d.jsonl", [record])
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:1: {message}"):
        list(stream(JsonlSource(str(p)), tok))


def test_consistent_record_with_text_and_avg_score_is_accepted(tmp_path, tok):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "ab", "texts": ["a", "b"], "scores": [0.1, 0.2], "avg_score": 0.15}])
    assert [d.texts for d in JsonlSource(str(p))] == [["a", "b"]]
    negative = write_jsonl(tmp_path / "n.jsonl", [{"texts": ["a"], "scores": [-1.0]}])  # a reward-like scale
    assert [d.scores for d in JsonlSource(str(negative), min_score=None)] == [[-1.0]]


# -- 6. / 12. data settings that could never work ----------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("data.score_batch_docs=0", r"data.score_batch_docs must be an integer >= 1, got 0"),
    ("data.shuffle_buffer=-1", r"data.shuffle_buffer must be an integer >= 0, got -1"),
    ("data.num_workers=-1", r"data.num_workers must be an integer >= 0, got -1"),
])
def test_impossible_data_setting_is_refused_at_once(tmp_path, override, message):
    cfg = compose(TINY + [override, f"run_dir={tmp_path}"])
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert time.monotonic() - t0 < 60  # no endless loop
