"""Round 3, data inputs (issue 27): oversize records, the fitted tokenizer's cache, data settings and the
skip counters. Each test is a row of docs/reliability.md's "Round 3" catalogue."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phf.data.bpe import fit_bpe
from phf.data.document import Document
from phf.data.pipeline import BlockStream
from phf.data.segment import LineSegmenter
from phf.data.sources import JsonlSource
from phf.train import train
from tests.conftest import ROOT, TINY, compose
from tests.data.test_bpe import code_corpus
from tests.reliability.conftest import write_prescored


class ZeroScorer:
    name = "zero"

    def score(self, texts):
        return [0.0] * len(texts)

    def score_document(self, texts):
        return self.score(texts)


@pytest.fixture(scope="module")
def tok():
    from phf.tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


def stream(source, tok, on_error="raise", split="train", val_fraction=0.0):
    return BlockStream(source, LineSegmenter(), ZeroScorer(), tok, 8, split=split, val_fraction=val_fraction,
                       shuffle_buffer=0, on_error=on_error, epochs=1)


def write_jsonl(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


# -- the fitted BPE: a huge record, a damaged cache, an unusable cache_dir --------------------------
def test_bpe_refuses_a_document_over_max_doc_chars_naming_it_and_the_keys(tmp_path):
    """The 1 GB line aborted the process inside the Rust trainer; the limit is checked before it (here
    a small limit stands in for the default 10 M characters)."""
    docs = code_corpus(10) + [Document(["x = 1\n" * 50], None, id="big.jsonl:11")]
    with pytest.raises(ValueError, match=r"document big\.jsonl:11 has 300 characters, more than "
                                         r"tokenizer\.max_doc_chars=200 .*data\.source\.max_chars=200"):
        fit_bpe(docs, vocab_size=300, cache_dir=str(tmp_path), max_doc_chars=200)
    assert not (tmp_path / "tokenizers").exists() or not any((tmp_path / "tokenizers").iterdir())
    with pytest.raises(ValueError, match="tokenizer.max_doc_chars must be a positive integer, got 0"):
        fit_bpe(docs, vocab_size=300, cache_dir=str(tmp_path), max_doc_chars=0)


def test_bpe_fit_skips_documents_the_source_dropped_by_max_chars(tmp_path):
    """The way out the error names: data.source.max_chars drops the record before the tokenizer sees it."""
    records = [{"text": f"def f{i}(x):\n    return x + {i}\n"} for i in range(30)] + [{"text": "y = 2\n" * 100}]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    source = JsonlSource(path, max_chars=200)
    tok = fit_bpe(source, vocab_size=300, cache_dir=str(tmp_path / "c"), max_doc_chars=200)
    assert len(tok) <= 300 and list(source.filtered) == [f"{path}:31"]


def test_damaged_bpe_cache_is_fitted_again_with_a_warning_naming_it(tmp_path, caplog):
    first = fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path))
    cached = next((tmp_path / "tokenizers").glob("bpe-*/tokenizer.json"))
    cached.write_text('{"version": "1.0", "truncat')  # a torn write or a disk error
    with caplog.at_level(logging.WARNING, logger="phf.data.bpe"):
        again = fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path))
    assert again.get_vocab() == first.get_vocab()  # deterministic: the same tokenizer
    assert str(cached.parent) in caplog.text and "cannot be loaded" in caplog.text
    damaged = cached.parent.with_name(cached.parent.name + ".damaged")
    assert (damaged / "tokenizer.json").read_text().endswith("truncat")  # kept, not deleted
    assert json.loads(cached.read_text())["model"]["type"] == "BPE"  # the cache works again


def test_bpe_cache_dir_that_is_a_file_names_the_key_and_path(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match=rf"tokenizer=bpe cannot write the fitted tokenizer under {blocker}/tokenizers.*"
                                      rf"cache_dir={blocker} must be a writable directory"):
        fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(blocker))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_bpe_read_only_cache_dir_names_the_key_and_path(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OSError, match=rf"cache_dir={ro} must be a writable directory"):
            fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(ro))
    finally:
        ro.chmod(0o755)


def test_bpe_unwritable_cache_dir_fails_before_the_fit(tmp_path, monkeypatch):
    """A read-only directory (simulated: tests may run as root) stops the run before the minute of fitting."""
    import phf.data.bpe as bpe

    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(bpe.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(bpe, "_train_bpe", lambda *a, **k: pytest.fail("fitted before checking cache_dir"))
    with pytest.raises(OSError, match=rf"PermissionError.*cache_dir={tmp_path} must be a writable directory"):
        fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path))


# -- data settings that name their key ---------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("data.val_fraction=0", r"data\.val_fraction=0 holds out no document, but the run measures a held-out loss "
                            r"\(trainer\.val_blocks=4\): set data\.val_fraction in \(0, 1\)"),
    ("data.val_fraction=0.999", r"the train split .* is empty .*data\.val_fraction=0\.999 holds out \(nearly\) every "
                                r"document for validation: lower it \(a number in \[0, 1\)"),
    ("data.val_fraction=abc", r"data\.val_fraction must be a number in \[0, 1\) .*got 'abc'"),
    ("data.val_fraction=1", r"data\.val_fraction must be a number in \[0, 1\) .*got 1"),
    ("objective=filtering objective.threshold=abc", r"objective\.threshold must be a number or null \(Filtering\), got 'abc'"),
    ("objective=conditional objective.threshold=abc", r"objective\.threshold must be a number \(Conditional\), got 'abc'"),
    ("objective=unlikelihood objective.alpha=[1]", r"objective\.alpha must be a number \(Unlikelihood\), got \[1\]"),
    ("objective=awr objective.alpha=2", r"objective: AWR alpha must be in \[0, 1\], got 2"),
])
def test_bad_data_or_objective_setting_names_the_key(fast_cfg, override, message):
    with pytest.raises(ValueError, match=message):
        train(fast_cfg("trainer.max_steps=1", *override.split()))


# -- data.source.max_chars: a real key, constant memory, one log line per dropped record ------------
def test_max_chars_is_a_key_of_the_jsonl_and_hf_sources():
    for data in ("jsonl", "hf"):
        cfg = compose([o for o in TINY if not o.startswith("data")]
                      + [f"data={data}", "data.source.max_chars=100", "data.source.min_chars=2"])
        assert cfg.data.source.max_chars == 100 and cfg.data.source.min_chars == 2
    assert compose(["task=pep8", "data=jsonl"]).data.source.max_chars is None  # no limit unless asked


def test_every_record_dropped_by_max_chars_is_logged_and_counted(tmp_path, tok, caplog):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a = 1\n"}, {"text": "b = 2\n" * 40}, {"text": "c = 3\n"},
                                              {"text": "d = 4\n" * 40}])
    source = JsonlSource(path, max_chars=50)
    s = stream(source, tok)
    with caplog.at_level(logging.INFO, logger="phf.data.sources"):
        list(s)
    for n, line in enumerate((2, 4), 1):
        assert (f"dropping {path}:{line} ({n} dropped by length so far): 240 characters > data.source.max_chars=50"
                in caplog.text)
    assert s.stats["filtered_by_length"] == 2 and s.stats["documents"] == 2 and s.stats["skipped_bad"] == 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="phf.data.sources"):
        list(source)  # a second pass (the next epoch): already said, not said again at INFO
    assert "dropping" not in caplog.text


def test_a_line_over_the_byte_cap_is_dropped_unread(tmp_path, tok, caplog):
    """A line longer than data.source.max_line_bytes is read in chunks to its end, never whole."""
    huge = json.dumps({"text": "x" * 5000})
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a = 1\n"}, huge, {"text": "c = 3\n"}])
    source = JsonlSource(path, max_line_bytes=100)
    source.CHUNK = 64  # small chunks: the loop that skips the rest of the line runs many times
    with caplog.at_level(logging.INFO, logger="phf.data.sources"):
        docs = list(source)
    assert [d.text for d in docs] == ["a = 1\n", "", "c = 3\n"]
    assert docs[1].meta == {"filtered": source.filtered[f"{path}:2"]}
    assert f"a line of {len(huge) + 1} bytes, over the 100-byte limit (data.source.max_line_bytes=100)" in caplog.text
    assert [d.text for d in source.iter_from(2)] == ["c = 3\n"]  # positions still count the dropped line


def test_max_chars_drops_a_huge_line_in_constant_memory(tmp_path):
    """A 200 MB single-line record with data.source.max_chars=1000: read in 1 MiB chunks, never whole.
    The peak RSS of a subprocess that reads the file is compared with its RSS before reading."""
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"text": "small\n"}) + "\n")
        f.write('{"text": "')
        chunk = "y" * (1 << 20)
        for _ in range(200):
            f.write(chunk)
        f.write('"}\n')
        f.write(json.dumps({"text": "after\n"}) + "\n")
    code = (
        "import resource, sys\n"
        "from phf.data.sources import JsonlSource\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"src = JsonlSource({str(path)!r}, max_chars=1000)\n"
        "texts = [d.text for d in src]\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(texts, list(src.filtered.values()), (after - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    texts, rest = out.split("] [", 1)
    assert texts == "['small\\n', '', 'after\\n'"
    assert "a line of 209715213 bytes, over the 1060576-byte limit" in rest
    grew_mb = int(rest.rsplit(" ", 1)[1])
    print(f"peak RSS growth while dropping a 200 MB line: {grew_mb} MB")
    assert grew_mb < 50  # the line is never held (it would be >= 200 MB)


# -- skip counters -------------------------------------------------------------------------------
def test_skipped_bad_counts_records_the_source_skipped(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a = 1\n"}, '{"text": ', {"content": 1}, {"text": "b = 2\n"}])
    s = stream(JsonlSource(path, on_error="skip"), tok, on_error="skip")
    list(s)
    assert s.stats["skipped_bad"] == 2 and s.stats["documents"] == 2
    assert s.state_dict()["stats"]["skipped_bad"] == 2  # checkpointed with the data position


def test_all_records_skipped_gives_the_right_count(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", ['{"text": '] * 50)
    with pytest.raises(ValueError, match=r"the train split of the data source is empty for rank 0/1 \(50 documents "
                                         r"read, 0 dropped by the objective, 50 skipped as bad, 0 dropped by"):
        list(stream(JsonlSource(path, on_error="skip"), tok, on_error="skip"))


def test_skipped_bad_is_logged_by_the_trainer(fast_cfg, tmp_path):
    """Three bad lines at the top of the corpus: data/skipped_bad is 3 from the first logged step on."""
    good = write_prescored(tmp_path / "good.jsonl", n_docs=80).read_text()
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": \n' * 3 + good)
    train(fast_cfg("trainer.max_steps=2", "trainer.log_every=1", f"data.source.path={path}", "data.on_error=skip"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["data/skipped_bad"] for r in rows if "data/skipped_bad" in r] == [3, 3]


def test_phf_train_with_bpe_names_the_oversize_record(tmp_path):
    """End to end through the config: the error names FILE:LINE and both keys, before any fitting."""
    from hydra.utils import instantiate

    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a = 1\n"}] * 5 + [{"text": "b = 2\n" * 100}])
    cfg = compose([o for o in TINY if not o.startswith(("data", "tokenizer"))] + [
        "data=jsonl", f"data.source.path={path}", "data.val_fraction=0.01", "tokenizer=bpe",
        "tokenizer.vocab_size=300", "tokenizer.max_doc_chars=500", f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(Exception, match=rf"document {path}:6 has 600 characters, more than tokenizer\.max_doc_chars=500"):
        instantiate(cfg.tokenizer)
    cfg = compose([o for o in TINY if not o.startswith(("data", "tokenizer"))] + [
        "data=jsonl", f"data.source.path={path}", "data.val_fraction=0.01", "tokenizer=bpe", "tokenizer.vocab_size=300",
        "tokenizer.max_doc_chars=500", "data.source.max_chars=500", f"cache_dir={tmp_path / 'cache'}"])
    assert len(instantiate(cfg.tokenizer)) <= 300  # the way out the error names works


def test_phf_train_with_bpe_and_a_file_as_cache_dir_names_the_key(prescored, tmp_path):
    from hydra.utils import instantiate

    from tests.reliability.conftest import fast_overrides

    blocker = tmp_path / "cache"
    blocker.write_text("a file")
    cfg = compose([o for o in fast_overrides(prescored) if not o.startswith("tokenizer")]
                  + ["tokenizer=bpe", "tokenizer.vocab_size=300", f"cache_dir={blocker}"])
    with pytest.raises(Exception, match=rf"cache_dir={blocker} must be a writable directory"):
        instantiate(cfg.tokenizer)


def test_bpe_cache_write_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    """Disk full while the fitted tokenizer is saved: the error names cache_dir, no temporary directory stays."""
    import errno

    from transformers import PreTrainedTokenizerFast

    def full(self, path, *a, **k):
        (Path(path) / "tokenizer.json").write_text("{")  # a partial file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", full)
    with pytest.raises(OSError, match=rf"No space left on device.*cache_dir={tmp_path} must be a writable directory"):
        fit_bpe(code_corpus(), vocab_size=300, cache_dir=str(tmp_path))
    assert list((tmp_path / "tokenizers").iterdir()) == []
