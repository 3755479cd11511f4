"""Data records that cannot be trained on are refused naming the file and line: a lone surrogate, a score
beyond float32, a record that contradicts itself. Rows of docs/reliability.md's "Bad input: the catalogue".
"""

from __future__ import annotations

import re

import pytest
import torch

from phf.data.sources import JsonlSource
from tests.reliability.streams import stream, write_jsonl


# -- a lone surrogate ------------------------------------------------------------------------------
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


# -- a score beyond float32 -------------------------------------------------------------------------
def test_score_beyond_float32_is_refused_naming_the_record(tmp_path, tok):
    p = write_jsonl(tmp_path / "d.jsonl", [{"texts": ["a\n"], "scores": [0]}, {"texts": ["b\n"], "scores": [1e39]}])
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:2: scores\[0\] = 1e\+39 is outside float32's range"):
        list(stream(JsonlSource(str(p)), tok))
    blocks = list(stream(JsonlSource(str(p), on_error="skip"), tok, block_size=2))
    assert all(torch.isfinite(b["token_scores"]).all() for b in blocks)


# -- self-contradicting records ----------------------------------------------------------------------
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
