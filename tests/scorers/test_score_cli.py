"""phf-score: pre-score a small JSONL file into the paper's format, in order, with workers."""

from __future__ import annotations

import json

import pytest

from phf.score_cli import main

RECORDS = [
    {"text": "Have a nice day. You are a fucking idiot! Goodbye.", "meta": {"n": 0}},
    {"texts": ["hello ", "world"]},
    {"text": "Just one sentence here."},
] + [{"text": f"Document number {i}. It is short."} for i in range(9)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("workers", [1, 2])
def test_scores_a_file_in_order_in_the_paper_format(tmp_path, workers, capsys):
    from profanity_check import predict_prob

    src = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    args = [str(src), "-o", str(out), "--scorer", "profanity", "--workers", str(workers), "--chunk-docs", "2"]
    assert main(args + ["--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = read_jsonl(out)
    assert len(rows) == len(RECORDS)
    assert rows[0]["texts"] == ["Have a nice day. ", "You are a fucking idiot! ", "Goodbye."]
    assert rows[0]["meta"] == {"n": 0} and rows[1]["texts"] == ["hello ", "world"]
    for r, rec in zip(rows, RECORDS, strict=True):
        assert "".join(r["texts"]) == rec.get("text", "".join(rec.get("texts", [])))
        assert r["scores"] == pytest.approx(predict_prob(r["texts"]).tolist(), abs=1e-12)
        assert r["avg_score"] == pytest.approx(sum(r["scores"]) / len(r["scores"]))
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1].split("phf-score: ", 1)[1])
    assert summary["documents"] == len(RECORDS) and summary["segments"] == sum(len(r["texts"]) for r in rows)
    # a second run is answered from the score cache
    assert main(args + ["--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    again = json.loads(capsys.readouterr().err.strip().splitlines()[-1].split("phf-score: ", 1)[1])
    assert again["segments_scored"] == 0 and again["cache_hits"] == summary["segments"]
    assert read_jsonl(out) == rows


def test_pep8_uses_lines_and_file_context(tmp_path):
    src = write_jsonl(tmp_path / "code.jsonl", [{"text": "import os\ndef f(a,b):\n    return a+b\n"}])
    out = tmp_path / "out.jsonl"
    assert main([str(src), "-o", str(out), "--scorer", "pep8", "--no-progress"]) == 0
    (row,) = read_jsonl(out)
    assert row["texts"] == ["import os\n", "def f(a,b):\n", "    return a+b\n"]
    assert row["scores"][0] == 0 and row["scores"][1] > 0


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": \n', "bad.jsonl:2: malformed JSON"),
        ('{"text": "ok"}\n\n{"txt": "x"}\n', "bad.jsonl:3: record has neither 'texts' nor 'text'"),
        ('{"texts": "not a list"}\n', "bad.jsonl:1: 'texts' must be a list of strings"),
        ("[1, 2]\n", "bad.jsonl:1: expected a JSON object"),
        ('{"text": ""}\n', "bad.jsonl:1: empty document"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, capsys, content, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    assert main([str(src), "-o", str(out), "--scorer", "profanity", "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))  # no partial output left behind


def test_scorer_config_file_and_overrides(tmp_path):
    from tests.conftest import CONF

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "Mail me at jane@example.com. Thanks."}])
    out = tmp_path / "out.jsonl"
    conf = str(CONF / "scorer" / "pii.yaml")
    assert (
        main(
            [str(src), "-o", str(out), "--scorer", conf, "--set", "entities=[EMAIL_ADDRESS]", "--no-progress"]
        )
        == 0
    )
    (row,) = read_jsonl(out)
    assert row["scores"] == [1 / len("Mail me at jane@example.com. "), 0.0]


def test_a_named_source(tmp_path):
    out = tmp_path / "out.jsonl"
    args = ["--source", "local_toxicity", "--source-arg", f"cache_dir={tmp_path}", "--source-arg", "n_docs=6"]
    assert main(args + ["-o", str(out), "--scorer", "profanity", "--no-progress", "--limit", "4"]) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [f"local_toxicity[{i}]" for i in range(4)]
    assert all(len(r["texts"]) == len(r["scores"]) >= 1 for r in rows)


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["-o", str(tmp_path / "o.jsonl"), "--scorer", "profanity"])  # neither input nor --source
    assert (
        main([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--scorer", "profanity"]) == 2
    )
    assert "not found" in capsys.readouterr().err


class Exploding:
    """A scorer that fails on one segment (loaded by class path, as a user plugin would be)."""

    name, version, contextual, key = "exploding", "0", False, "exploding@0"

    def score(self, texts):
        from phf.scorers import ScorerError

        for t in texts:
            if "BOOM" in t:
                raise ScorerError(self.name, t, "ValueError: cannot score this")
        return [0.5] * len(texts)


def test_a_scorer_failure_names_the_document_and_segment(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine."}, {"text": "Also fine. BOOM goes here."}])
    out = tmp_path / "out.jsonl"
    scorer = f"{__name__}.Exploding"
    assert main([str(src), "-o", str(out), "--scorer", scorer, "--no-progress", "--chunk-docs", "5"]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl:2" in err and "'exploding'" in err and "BOOM goes here." in err
    assert not out.exists()
