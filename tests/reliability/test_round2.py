"""Reliability round 2 (issue 18): probes a hostile or unlucky user tried that round 1 did not cover.

Each test names the probe; docs/reliability.md's "Bad input: the catalogue" lists the same behaviours.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
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


def test_encode_text_splits_special_strings_for_any_fast_tokenizer():
    """A task-fitted byte-level BPE (a plain PreTrainedTokenizerFast): same guarantee as GPT-2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from phf.tokenizer import add_special_tokens, encode_text

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(["def f(x):\n    return x\n"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fitted = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    special = set(add_special_tokens(fitted, ["<|aligned|>", "<|misaligned|>"])) | {fitted.eos_token_id}
    text = "x = '<|endoftext|>' <|aligned|><|misaligned|>"
    ids = encode_text(fitted, [text])[0]
    assert not special & set(ids) and fitted.decode(ids) == text
    assert fitted(text, add_special_tokens=False)["input_ids"][-1] in special  # what parsing would have done


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
    ("data.prepare_docs=0", r"data.prepare_docs must be an integer >= 1, got 0"),
    ("model.block_size=1", r"model.block_size must be at least 2 \(an input and its next-token target\), got 1"),
])
def test_impossible_data_setting_is_refused_at_once(tmp_path, override, message):
    cfg = compose(TINY + [override, f"run_dir={tmp_path}"])
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert time.monotonic() - t0 < 60  # no endless loop


# -- 5. a data worker that dies ---------------------------------------------------------------------------
class KillingScorer(ZeroScorer):
    """Kills its own process (a data worker: the scorer runs there) on a segment holding ``KILL``."""

    def score(self, texts):
        if any("KILL" in t for t in texts):
            os.kill(os.getpid(), signal.SIGKILL)
        return [0.0] * len(texts)

    score_document = score


def test_killed_data_worker_is_an_error_naming_it_not_a_hang(tmp_path, tok):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": f"x{i} = {i}\n"} for i in range(40)] + [{"text": "KILL = 1\n"}])
    s = BlockStream(JsonlSource(str(p)), LineSegmenter(), KillingScorer(), tok, 4, val_fraction=0.0, shuffle_buffer=0,
                    score_batch_docs=4, epochs=1, num_workers=1, worker_check_seconds=0.2)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"data worker \S+ \(pid \d+\) died with signal 9 .*data.num_workers=1.*"
                                           r"trainer.resume=auto.*data.num_workers=0"):
        list(s)
    assert time.monotonic() - t0 < 60


def test_bad_document_in_a_data_worker_raises_in_the_trainer(tok):
    """The document check runs in the worker process; its error reaches the trainer unchanged."""
    from phf.data.document import Document

    class Raw:
        def iter_from(self, start):
            docs = [Document([f"a{i} = 1\n"], None, id=f"raw:{i}") for i in range(10)] + [Document(["b\ud800"], id="raw:x")]
            yield from docs[start:]

    s = BlockStream(Raw(), LineSegmenter(), ZeroScorer(), tok, 2, val_fraction=0.0, shuffle_buffer=0,
                    score_batch_docs=2, epochs=1, num_workers=1, worker_check_seconds=0.2)
    with pytest.raises(ValueError, match=r"raw:x: texts\[0\] has a lone surrogate.*data.on_error=skip"):
        list(s)


def test_data_worker_killed_from_outside_while_idle(tmp_path, tok):
    """kill -9 of a worker waiting for its next batch (as the OOM killer or a user would): an error
    naming it, and shutting the stream down does not hang on anything the dead worker held."""
    import multiprocessing

    p = write_jsonl(tmp_path / "d.jsonl", [{"text": f"x{i} = {i}\n"} for i in range(400)])
    s = BlockStream(JsonlSource(str(p)), LineSegmenter(), ZeroScorer(), tok, 4, val_fraction=0.0, shuffle_buffer=0,
                    score_batch_docs=2, epochs=1, num_workers=1, worker_check_seconds=0.2)
    it = iter(s)
    next(it)
    time.sleep(0.5)  # the worker has finished its batches and waits for the next one
    (worker,) = [c for c in multiprocessing.active_children() if c.name.startswith("phf-data-worker")]
    os.kill(worker.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"data worker phf-data-worker-0 \(pid {worker.pid}\) died with signal 9"):
        list(it)
    assert time.monotonic() - t0 < 60


# -- 12. values that name no key, or were accepted ------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("seed=abc", r"seed must be an integer, got 'abc'"),
    ("seed=1.5", r"seed must be an integer, got 1.5"),
    (f"seed={2**64}", r"seed must be in \[-2\*\*63, 2\*\*64\) \(torch's seed range\), got 18446744073709551616"),
    ("trainer.eps=abc", r"trainer.eps must be a positive number, got 'abc'"),
    ("trainer.betas=[0.9]", r"trainer.betas must be two numbers in \[0, 1\), e.g. \[0.9, 0.999\], got \[0.9\]"),
    ("model.n_layer=0", r"model.n_layer must be a positive integer, got 0"),
])
def test_bad_run_value_names_the_key(tmp_path, override, message):
    with pytest.raises(Exception, match=message) as e:  # model.*: Hydra's InstantiationException around it
        train(compose(TINY + [override, f"run_dir={tmp_path / 'run'}"]))
    assert isinstance(e.value, ValueError) or isinstance(e.value.__cause__, ValueError)


# -- 7. a damaged or unusable score cache ----------------------------------------------------------------------
def test_damaged_score_cache_names_the_file_and_the_way_out(tmp_path):
    from phf.scorers.cache import CACHE_FILE, ScoreCache, ScoreCacheError, text_hash

    garbage = tmp_path / "garbage" / CACHE_FILE
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not an sqlite file" * 100)
    with pytest.raises(ScoreCacheError, match=rf"score cache {re.escape(str(garbage))}: DatabaseError: .*"
                                              r"delete it .*cache_dir=null"):
        ScoreCache(garbage)
    good = ScoreCache(tmp_path / "t" / CACHE_FILE)
    good.put_many("k", [(text_hash(str(i) * 50), [0.5]) for i in range(3000)])
    good.close()
    f = tmp_path / "t" / CACHE_FILE
    for extra in ("-wal", "-shm"):
        Path(str(f) + extra).unlink(missing_ok=True)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(ScoreCacheError, match=rf"score cache {re.escape(str(f))}: .*malformed.*delete it"):
        ScoreCache(f).get_many("k", [text_hash(str(i) * 50) for i in range(3000)])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ScoreCacheError, match=rf"score cache {re.escape(str(blocker))}/c/{CACHE_FILE}: .*cannot open "
                                              r"or write it.*cache_dir=null"):
        ScoreCache(blocker / "c" / CACHE_FILE)


# -- files of an existing run -------------------------------------------------------------------------------------
@pytest.fixture
def run_copy(tmp_path, checkpoint) -> Path:
    """A copy of a finished tiny run (max_steps 2) with its step-1 checkpoint and final/."""
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run)
    (run / "phf.lock").unlink(missing_ok=True)
    return run


# -- 4. an AWR checkpoint without its value head ----------------------------------------------------------------------
def test_awr_checkpoint_without_value_head_is_refused(fast_cfg, tmp_path):
    run = tmp_path / "run"
    train(fast_cfg("objective=awr", "trainer.max_steps=2", "trainer.checkpoint_every=1"))
    head = run / "checkpoints" / "step_00000001" / "value_head.safetensors"
    assert head.is_file()
    head.unlink()
    with pytest.raises(ValueError, match=r"step_00000001 has no value_head.safetensors but objective AWR trains a "
                                         r"value head.*trainer.resume=never"):
        train(fast_cfg("objective=awr", "trainer.max_steps=3", "trainer.checkpoint_every=1"))


# -- 8. resuming with other settings ----------------------------------------------------------------------------------
def test_resume_with_other_settings_is_refused_naming_the_keys(fast_cfg, run_copy):
    with pytest.raises(ValueError, match=r"differ from the run's stored config .*config.yaml: "
                                         r"model.n_layer: 1 -> 2; objective._target_: 'phf.objectives.MLE' -> "
                                         r"'phf.objectives.Unlikelihood'.*trainer.resume_mismatch=continue"):
        train(fast_cfg("objective=unlikelihood", "model.n_layer=2", "trainer.max_steps=2", run_dir=run_copy))
    with pytest.raises(ValueError, match=r"data.source.path: .*prescored.jsonl' -> '.*other.jsonl'"):
        other = run_copy.parent / "other.jsonl"
        shutil.copy(fast_cfg().data.source.path, other)
        train(fast_cfg("trainer.max_steps=2", f"data.source.path={other}", run_dir=run_copy))
    before = (run_copy / "config.yaml").read_text()
    out = train(fast_cfg("seed=7", "trainer.max_steps=2", "trainer.resume_mismatch=continue", run_dir=run_copy))
    assert out["step"] == 2
    assert (run_copy / "config.step_00000001.yaml").read_text() == before  # the old settings are kept
    assert "seed: 7" in (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match=r"cannot read the stored config .*config.yaml to check the resume: .*"
                                         r"trainer.resume_mismatch=continue"):
        train(fast_cfg("seed=7", "trainer.max_steps=2", run_dir=run_copy))


# -- 9. max_steps changed on resume ----------------------------------------------------------------------------------
def test_max_steps_changed_on_resume(fast_cfg, tmp_path, caplog):
    from phf.tracking import read_metrics

    run = tmp_path / "run"
    train(fast_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"))
    with caplog.at_level(logging.WARNING, logger="phf.train"):
        train(fast_cfg("trainer.max_steps=8", "trainer.checkpoint_every=2"))
    assert "trainer.max_steps changed on resume (4 -> 8)" in caplog.text
    lr = {r["step"]: r["lr"] for r in read_metrics(run) if "lr" in r}
    # warmup 1 step, then linear decay over the NEW plan: step 3 (index 2) uses 5e-4 * (8 - 2) / 7
    assert lr[3] == pytest.approx(5e-4 * 6 / 7) and lr[8] == pytest.approx(5e-4 * 1 / 7)
    with pytest.raises(ValueError, match=r"checkpoint .*step_00000006 is at step 6 but this run ends at step 3.*"
                                         r"Raise trainer.max_steps above 6"):
        train(fast_cfg("trainer.max_steps=3", "trainer.checkpoint_every=2"))
    assert json.loads((run / "final" / "phf_summary.json").read_text())["step"] == 8  # untouched


# -- 10. disk full while writing a checkpoint ----------------------------------------------------------------------------
def test_checkpoint_write_failure_removes_the_partial_checkpoint_and_says_disk_full(fast_cfg, tmp_path, monkeypatch):
    from phf import checkpoint as ckpt

    real_save, calls = torch.save, {"n": 0}

    def full_disk_save(obj, f, *a, **k):
        calls["n"] += 1
        if str(f).endswith("trainer_state.pt") and calls["n"] > 2:  # the second checkpoint hits a full disk
            Path(f).write_bytes(b"\0" * 1000)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1000 vs 960")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", full_disk_save)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    run = tmp_path / "run"
    with pytest.raises(OSError, match=r"writing checkpoint step 2 under .*checkpoints failed: the disk is full "
                                      r"\(No space left on device\).*unexpected pos.*partial checkpoint was removed.*"
                                      r"step_00000001, is intact.*trainer.resume=auto"):
        train(fast_cfg("trainer.max_steps=3", "trainer.checkpoint_every=1"))
    assert sorted(os.listdir(run / "checkpoints")) == ["latest.json", "step_00000001"]


# -- 11. two trainings on one run directory --------------------------------------------------------------------------------
def hold_lock(run: Path) -> subprocess.Popen:
    """Another process that holds ``run``'s lock, as a live phf-train would."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, socket, sys, time\n"
        f"fd = os.open({str(run / 'phf.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    return holder


def test_second_training_on_a_run_directory_in_use_is_refused(fast_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"run directory {re.escape(str(run))} is in use by PID {holder.pid} "
                                               r"\(lock file .*phf.lock"):
            train(fast_cfg("trainer.max_steps=1"))
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is stale, the next run takes it over and says so
    with caplog.at_level(logging.WARNING, logger="phf.train"):
        assert train(fast_cfg("trainer.max_steps=1"))["step"] == 1
    assert f"taking over the stale lock {run / 'phf.lock'}" in caplog.text
    assert (run / "phf.lock").read_text() == ""  # released at the end


@pytest.mark.slow
def test_phf_train_refused_for_a_directory_in_use_writes_nothing_there(tmp_path):
    """phf-train's own failure record (error.txt) must not land in the directory of the live run."""
    from tests.reliability.harness import command, env

    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = subprocess.run(command(run, base=TINY), env=env(), capture_output=True, text=True, timeout=300)
        assert res.returncode != 0 and f"is in use by PID {holder.pid}" in res.stderr
        assert not (run / "error.txt").exists()
    finally:
        holder.kill()
        holder.wait()


# -- 13. phf-eval on an unfinished final/ -------------------------------------------------------------------------------------
def test_phf_eval_refuses_a_truncated_or_incomplete_final(run_copy):
    from phf.eval.cli import evaluate_saved

    final = run_copy / "final"
    (final / "phf_summary.json").unlink()
    with pytest.raises(SystemExit, match=rf"{re.escape(str(final))} is incomplete: no phf_summary.json.*"
                                         r"trainer.resume=auto.*allow_incomplete=true"):
        evaluate_saved({"run_dir": str(run_copy)}, [])
    data = (final / "model.safetensors").read_bytes()
    (final / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match=rf"corrupt or truncated checkpoint file {re.escape(str(final))}/"
                                         r"model.safetensors.*resume the training"):
        evaluate_saved({"run_dir": str(run_copy), "allow_incomplete": "true"}, [])


# -- 14. phf-report over a sweep with one damaged run ----------------------------------------------------------------------------
@pytest.mark.parametrize("file, content", [
    ("eval.json", b'{"scenarios": {"unconditional": {"score": 0.1'),
    ("metrics.jsonl", b'{"step": 1, "loss": 2.0}\n\xff\xfe\x00garbage\n{"step": 2, "loss": 1.9}\n'),
    ("metrics.jsonl", b'{"step": 1}\n[1, 2]\n{"step": 2}\n'),
    ("config.yaml", b"task: [unclosed\n  - : :\n"),
], ids=["eval.json truncated", "metrics.jsonl garbage", "metrics.jsonl non-object row", "config.yaml garbage"])
def test_report_marks_and_skips_one_damaged_run(tmp_path, checkpoint, capsys, file, content):
    from phf.report import build_report

    sweep = tmp_path / "sweep"
    for name in ("0-mle", "1-filtering"):
        shutil.copytree(checkpoint.parent.parent, sweep / name, ignore=shutil.ignore_patterns("checkpoints", "final"))
    (sweep / "1-filtering" / file).write_bytes(content)
    out = build_report([sweep], sweep)
    status = {r["run"]: r["status"] for r in out["table"]}
    assert not status["0-mle"].startswith("skipped")
    assert status["1-filtering"].startswith(f"skipped, damaged: {sweep / '1-filtering' / file}")
    assert f"skipping run {sweep / '1-filtering'}: damaged file {sweep / '1-filtering' / file}" in capsys.readouterr().err
    assert "skipped, damaged" in (sweep / "report.md").read_text()


# -- 15. resuming over a damaged metrics.jsonl -------------------------------------------------------------------------------------
def test_resume_keeps_going_over_bad_metrics_rows_and_keeps_them(fast_cfg, run_copy, caplog):
    from phf.tracking import read_metrics

    m = run_copy / "metrics.jsonl"
    good = m.read_bytes()
    bad = [b"[1, 2]", b'{"loss": 1.0}', b'{"step": 1, "note": "caf\xe9"}']
    m.write_bytes(good + b"\n".join(bad) + b"\n")
    with caplog.at_level(logging.WARNING, logger="phf.train"):  # the finished run resumed from its checkpoint
        out = train(fast_cfg("trainer.max_steps=2", f"trainer.resume={run_copy / 'checkpoints' / 'step_00000001'}",
                             run_dir=run_copy))
    assert out["step"] == 2
    assert (run_copy / "metrics.rejected.jsonl").read_bytes() == b"\n".join(bad) + b"\n"
    assert "3 line(s) are not metrics rows" in caplog.text
    assert [r["step"] for r in read_metrics(run_copy) if "loss" in r] == [1, 2]


# -- phf-data --------------------------------------------------------------------------------------------------------------------
def test_phf_data_shows_control_token_strings_as_text(tmp_path, capsys):
    from phf.data_cli import main

    records = [{"texts": ["x = '<|endoftext|>'\n", "<|aligned|>bad = 1\n"], "scores": [0.0, 0.9]}] * 20
    p = write_jsonl(tmp_path / "d.jsonl", records)
    args = ["objective=conditional", "task=pep8", "task.objectives.conditional.drop_token_fraction=0.0", "data=jsonl",
            f"data.source.path={p}", "data.val_fraction=0.0", "data.shuffle_buffer=0", "model.block_size=16", "cache_dir=null",
            "tokenizer=gpt2"]
    main([*args, "n=3", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(len(r["input_ids"]) == len(r["token_scores"]) == 16 for r in rows)
    ids = [i for r in rows for i in r["input_ids"]]
    scores = [s for r in rows for s in r["token_scores"]]
    aligned, misaligned, eos = 50257, 50258, 50256
    # per document: EOS, <|aligned|> (score 0), text, <|misaligned|> (score 0.9), text; the strings stay text
    assert ids.count(eos) == ids.count(aligned) == ids.count(misaligned) >= 2
    assert all(scores[i] == pytest.approx(0.9) for i, t in enumerate(ids) if t == misaligned)
    main([*args, "n=1", "model.block_size=32"])
    text = capsys.readouterr().out
    assert "⟦<|misaligned|>⟧" in text and "'<|aligned|>bad = 1\\n'" in text and "x = '<|endoftext|>'" in text
