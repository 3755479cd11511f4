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


# -- parquet shards, the pipeline's scoring function --------------------------------------------------
CODE = [{"text": f"def f{i}(x):\n    return x+{i}\n" + ("y=1\n" if i % 2 else "")} for i in range(25)]


def read_shards(out_dir):
    import pyarrow.parquet as pq

    return [pq.read_table(p).to_pylist() for p in sorted(out_dir.glob("part-*.parquet"))]


def test_parquet_shards_in_the_paper_format_resume_shard_by_shard(tmp_path, monkeypatch, capsys):
    """25 documents, shards of 10: three shards with texts/scores/avg_score/num_sents that data=hf reads
    back; after the last shard is lost, a rerun scores only that shard's documents."""
    import phf.score_cli
    from phf.data.sources import HFSource

    src = write_jsonl(tmp_path / "code.jsonl", CODE)
    out = tmp_path / "scored"
    args = [str(src), "-o", str(out), "--format", "parquet", "--shard-docs", "10", "--scorer", "pep8",
            "--no-progress"]
    assert main(args) == 0
    shards = read_shards(out)
    assert [len(s) for s in shards] == [10, 10, 5]
    rows = sum(shards, [])
    assert set(rows[0]) == {"texts", "scores", "avg_score", "num_sents"}
    assert all(r["num_sents"] == len(r["texts"]) == len(r["scores"]) for r in rows)
    assert ["".join(r["texts"]) for r in rows] == [c["text"] for c in CODE]
    docs = list(HFSource("parquet", data_files=sorted(map(str, out.glob("part-*.parquet")))))
    assert [d.scores for d in docs] == [r["scores"] for r in rows]  # what training reads, checked on read

    (out / "part-00002.parquet").unlink()
    scored = []
    real = phf.score_cli.score_batch

    def counting(scorer, batch):
        scored.extend(d.id for d in batch)
        return real(scorer, batch)

    monkeypatch.setattr(phf.score_cli, "score_batch", counting)
    assert main(args) == 0
    assert "2 shards already" in capsys.readouterr().err
    assert len(scored) == 5 and read_shards(out) == shards
    assert main([*args[:-3], "--scorer", "profanity", "--no-progress"]) == 2  # other settings: refused
    assert "other settings" in capsys.readouterr().err


def test_phf_score_and_the_training_pipeline_give_the_same_scores(tmp_path):
    """One scoring path: phf-score's records and the pipeline's scored documents agree exactly."""
    from phf.data.pipeline import BlockStream
    from phf.data.segment import LineSegmenter
    from phf.data.sources import JsonlSource
    from phf.scorers import PEP8Scorer
    from phf.tokenizer import gpt2_tokenizer

    src = write_jsonl(tmp_path / "code.jsonl", CODE)
    assert main([str(src), "-o", str(tmp_path / "out.jsonl"), "--scorer", "pep8", "--no-progress"]) == 0
    stream = BlockStream(JsonlSource(str(src)), LineSegmenter(), PEP8Scorer(), gpt2_tokenizer(), block_size=8,
                         val_fraction=0.0)
    pipeline = stream.scored_sample(len(CODE))
    assert [d.scores for d in pipeline] == [r["scores"] for r in read_jsonl(tmp_path / "out.jsonl")]


def test_reads_what_data_hf_reads(tmp_path):
    """``--source hf``: local parquet shards of raw text through HFSource (a Hub name works the same)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for s in range(2):
        files.append(str(tmp_path / f"raw-{s}.parquet"))
        pq.write_table(pa.table({"text": [c["text"] for c in CODE[s::2]]}), files[-1])
    out = tmp_path / "scored"
    assert main(["--source", "hf", "--source-arg", "names=parquet", "--source-arg", f"data_files=[{','.join(files)}]",
                 "-o", str(out), "--format", "parquet", "--shard-docs", "100", "--scorer", "pep8",
                 "--no-progress"]) == 0
    rows = sum(read_shards(out), [])
    assert len(rows) == len(CODE) and all(r["texts"] and len(r["scores"]) == len(r["texts"]) for r in rows)
    assert {r["id"] for r in rows} >= {"parquet[0]"}
