"""phf-score: pre-score a small corpus into the paper's format, in order, with the pipeline's workers.

Each test composes phf-score's config (``conf/score.yaml``) as the command line does and runs its job.
"""

from __future__ import annotations

import json

import pytest

from phf.entry import compose
from phf.score_cli import job, score

RECORDS = [
    {"text": "Have a nice day. You are a fucking idiot! Goodbye.", "meta": {"n": 0}},
    {"texts": ["hello ", "world"], "scores": [0.25, 0.5], "meta": None},  # pre-scored: passes through
    {"text": "Just one sentence here.", "meta": None},
] + [{"text": f"Document number {i}. It is short.", "meta": i} for i in range(9)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def cfg_for(src, out, *overrides, task="toxicity_profanity"):
    return compose([f"task={task}", "data=jsonl", f"data.source.path={src}", f"score.out={out}",
                    "score.progress=false", "cache_dir=null", *overrides], config_name="score")


def last_summary(capsys) -> dict:
    return json.loads(capsys.readouterr().err.strip().splitlines()[-1].split("phf-score: ", 1)[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_scores_a_file_in_order_in_the_paper_format(tmp_path, workers, capsys):
    from profanity_check import predict_prob

    src = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    args = [f"data.num_workers={workers}", "data.score_batch_docs=2", "data.source.meta_keys=[meta]",
            f"cache_dir={tmp_path / 'cache'}"]
    score(cfg_for(src, out, *args))
    rows = read_jsonl(out)
    assert len(rows) == len(RECORDS)
    assert rows[0]["texts"] == ["Have a nice day. ", "You are a fucking idiot! ", "Goodbye."]
    assert rows[0]["meta"] == {"n": 0} and rows[1] == {"texts": ["hello ", "world"], "scores": [0.25, 0.5],
                                                       "avg_score": 0.375, "num_sents": 2, "meta": None}
    for r, rec in zip(rows, RECORDS, strict=True):
        assert "".join(r["texts"]) == rec.get("text", "".join(rec.get("texts", [])))
        assert r["meta"] == rec["meta"] and r["num_sents"] == len(r["texts"])
        if "text" in rec:
            assert r["scores"] == pytest.approx(predict_prob(r["texts"]).tolist(), abs=1e-12)
        assert r["avg_score"] == pytest.approx(sum(r["scores"]) / len(r["scores"]))
    summary = last_summary(capsys)
    assert summary["documents"] == len(RECORDS) and summary["segments"] == sum(len(r["texts"]) for r in rows)
    # a second run is answered from the score cache (the pre-scored record never reaches the scorer)
    score(cfg_for(src, out, *args))
    again = last_summary(capsys)
    assert again["segments_scored"] == 0 and again["cache_hits"] == summary["segments"] - 2
    assert read_jsonl(out) == rows


def test_pep8_uses_lines_and_file_context(tmp_path):
    src = write_jsonl(tmp_path / "code.jsonl", [{"text": "import os\ndef f(a,b):\n    return a+b\n"}])
    out = tmp_path / "out.jsonl"
    score(cfg_for(src, out, task="pep8"))
    (row,) = read_jsonl(out)
    assert row["texts"] == ["import os\n", "def f(a,b):\n", "    return a+b\n"]
    assert row["scores"][0] == 0 and row["scores"][1] > 0


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": \n', "bad.jsonl:2: malformed JSON"),
        ('{"text": "ok"}\n\n{"txt": "x"}\n', "bad.jsonl:3: record has neither 'texts' (+ 'scores') nor 'text'"),
        ('{"texts": "not a list", "scores": [0]}\n', "bad.jsonl:1: 'texts' must be a list of strings"),
        ("[1, 2]\n", "bad.jsonl:1: expected a JSON object"),
        ('{"text": ""}\n', "bad.jsonl:1: empty document"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, capsys, content, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as info:
        job(cfg_for(src, out))
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))  # no partial output left behind


def test_the_scorer_group_and_its_overrides(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "Mail me at jane@example.com. Thanks."}])
    out = tmp_path / "out.jsonl"
    score(cfg_for(src, out, "scorer=pii", "scorer.entities=[EMAIL_ADDRESS]"))
    (row,) = read_jsonl(out)
    assert row["scores"] == [1 / len("Mail me at jane@example.com. "), 0.0]


def test_a_data_group_source_and_a_limit(tmp_path):
    from phf.data.corpora import LocalToxicitySource

    out = tmp_path / "out.jsonl"
    cfg = compose(["task=toxicity_profanity", "data=local_toxicity", f"cache_dir={tmp_path}", "data.source.n_docs=6",
                   f"score.out={out}", "score.limit=4", "score.progress=false"], config_name="score")
    score(cfg)
    rows = read_jsonl(out)
    docs = list(LocalToxicitySource(cache_dir=str(tmp_path), n_docs=6))[:4]
    assert ["".join(r["texts"]) for r in rows] == [d.text for d in docs]
    assert all(len(r["texts"]) == len(r["scores"]) >= 1 for r in rows)


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # score.out is ???
        job(compose(["task=toxicity_profanity", "data=jsonl", f"data.source.path={tmp_path / 'x.jsonl'}"],
                    config_name="score"))
    assert info.value.code == 2 and "score.out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        job(cfg_for(tmp_path / "missing.jsonl", tmp_path / "o.jsonl"))
    assert info.value.code == 2 and "missing.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        job(cfg_for(tmp_path / "missing.jsonl", "-", "score.format=parquet"))
    assert "score.format=parquet writes a directory" in capsys.readouterr().err


class Exploding:
    """A scorer that fails on one segment (a user plugin named by ``scorer._target_``)."""

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
    with pytest.raises(SystemExit):
        job(cfg_for(src, out, f"scorer._target_={__name__}.Exploding", "~scorer.batch_size"))
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
    import phf.data.pipeline
    from phf.data.sources import HFSource

    src = write_jsonl(tmp_path / "code.jsonl", CODE)
    out = tmp_path / "scored"
    args = ["score.format=parquet", "score.shard_docs=10", "data.score_batch_docs=4"]
    score(cfg_for(src, out, *args, task="pep8"))
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
    real = phf.data.pipeline.score_batch

    def counting(scorer, batch):
        scored.extend(d.id for d in batch)
        return real(scorer, batch)

    monkeypatch.setattr(phf.data.pipeline, "score_batch", counting)
    score(cfg_for(src, out, *args, task="pep8"))
    assert "2 shards already" in capsys.readouterr().err
    assert len(scored) == 5 and read_shards(out) == shards
    with pytest.raises(SystemExit):  # other settings: refused
        job(cfg_for(src, out, *args, task="toxicity_profanity"))
    assert "other settings" in capsys.readouterr().err


def test_phf_score_and_the_training_pipeline_give_the_same_scores(tmp_path):
    """One scoring path: phf-score's records and the training stream's scored documents agree exactly."""
    from phf.data.pipeline import BlockStream
    from phf.data.segment import LineSegmenter
    from phf.data.sources import JsonlSource
    from phf.scorers import PEP8Scorer
    from phf.tokenizer import gpt2_tokenizer

    src = write_jsonl(tmp_path / "code.jsonl", CODE)
    score(cfg_for(src, tmp_path / "out.jsonl", task="pep8"))
    stream = BlockStream(JsonlSource(str(src)), LineSegmenter(), PEP8Scorer(), gpt2_tokenizer(), block_size=8,
                         val_fraction=0.0)
    pipeline = stream.scored_sample(len(CODE))
    assert [d.scores for d in pipeline] == [r["scores"] for r in read_jsonl(tmp_path / "out.jsonl")]


def test_reads_what_data_hf_reads(tmp_path):
    """``data=hf``: local parquet shards of raw text through HFSource (a Hub name works the same)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for s in range(2):
        files.append(str(tmp_path / f"raw-{s}.parquet"))
        pq.write_table(pa.table({"text": [c["text"] for c in CODE[s::2]]}), files[-1])
    out = tmp_path / "scored"
    cfg = compose(["task=pep8", "data=hf", "data.source.names=[parquet]", f"data.source.data_files=[{','.join(files)}]",
                   f"score.out={out}", "score.format=parquet", "score.shard_docs=100", "score.progress=false",
                   "cache_dir=null"], config_name="score")
    score(cfg)
    rows = sum(read_shards(out), [])
    assert len(rows) == len(CODE) and all(r["texts"] and len(r["scores"]) == len(r["texts"]) for r in rows)
    assert sorted("".join(r["texts"]) for r in rows) == sorted(c["text"] for c in CODE)


def test_push_to_hub_uploads_the_complete_shards_as_a_dataset(tmp_path, monkeypatch, capsys):
    """score.push_to_hub: after the shards are written, one commit to the dataset repo with every shard
    under data/ (the layout load_dataset reads) and the manifest. The Hub is replaced by a recorder:
    HfApi's create_repo/create_commit are what phf calls, and nothing here can reach the network."""
    import huggingface_hub
    from huggingface_hub import constants

    calls = []

    class Recorder:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private, exist_ok, repo_type):
            calls.append(("repo", repo_id, private, repo_type))

        def create_commit(self, repo_id, operations, commit_message, repo_type):
            calls.append(("commit", repo_id, sorted(op.path_in_repo for op in operations), repo_type))
            return "https://hub.example/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    src = write_jsonl(tmp_path / "code.jsonl", CODE)
    out = tmp_path / "scored"
    summary = score(cfg_for(src, out, "score.format=parquet", "score.shard_docs=10", "score.push_to_hub=me/scored",
                            task="pep8"))
    assert calls == [("repo", "me/scored", False, "dataset"),
                     ("commit", "me/scored", ["data/part-00000.parquet", "data/part-00001.parquet",
                                              "data/part-00002.parquet", "data/phf_score.json"], "dataset")]
    assert summary["pushed"] == ["https://hub.example/commit/1"]


@pytest.mark.parametrize("override, message", [
    ("score.push_to_hub=not a repo", "is not a valid Hub repository id"),
    ("score.push_to_hub=me/scored", r"offline mode \(HF_HUB_OFFLINE=1\): nothing was uploaded"),
])
def test_push_to_hub_is_refused_before_anything_is_scored(tmp_path, monkeypatch, override, message):
    """A bad repo id, or offline mode (as in these tests), stops phf-score before it writes anything."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "is_offline_mode", lambda: True)
    src = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit, match=message):
        score(cfg_for(src, out, override))
    assert not out.exists()
