"""A run's integrity across re-runs (issue 27, deliverables 2 and 3): a resume tokenizes with the tokenizer
saved in its checkpoint, whatever happened to the corpus or the tokenizer cache; a finished run is never
overwritten; ``final/`` is written atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from phf.entry import FinishedRunError
from phf.train import train
from tests.conftest import compose
from tests.reliability.conftest import fast_overrides, write_prescored


def _vocab(model_dir: Path) -> tuple[dict, list]:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    return tok["model"]["vocab"], tok["model"]["merges"]


def _bpe_cfg(corpus: Path, run: Path, cache: Path, *overrides: str):
    base = [o for o in fast_overrides(corpus) if not o.startswith(("tokenizer=", "cache_dir="))]
    return compose(base + ["tokenizer=bpe", "tokenizer.vocab_size=300", f"cache_dir={cache}", f"run_dir={run}",
                           "trainer.checkpoint_every=1", *overrides])


# -- deliverable 2: the tokenizer is part of the run ---------------------------------------------------------------
def test_resume_keeps_the_checkpoint_tokenizer_after_the_corpus_changed(tmp_path, one_thread):
    """Fit a 300-token BPE on a JSONL corpus, train 2 steps with checkpoints, rewrite the corpus in place, resume
    to step 4 (with another cache_dir, which is no mismatch): final/'s tokenizer is the checkpoint's, token for
    token, although a BPE fitted to the edited corpus would give many ids another meaning."""
    from phf.data.bpe import fit_bpe
    from phf.data.sources import JsonlSource

    corpus, run = write_prescored(tmp_path / "corpus.jsonl", seed=0), tmp_path / "run"
    train(_bpe_cfg(corpus, run, tmp_path / "cache", "trainer.max_steps=2"))
    before = _vocab(run / "checkpoints" / "step_00000001")
    assert len(before[0]) == 300

    write_prescored(corpus, n_docs=150, seed=1)  # the corpus edited in place
    refit = fit_bpe(JsonlSource(str(corpus)), vocab_size=300, val_fraction=0.2, cache_dir=str(tmp_path / "other"))
    changed = sum(before[0].get(t) != i for t, i in refit.backend_tokenizer.get_vocab().items())
    assert changed > 10  # the probe: a refit would have changed the meaning of these ids

    other_cache = tmp_path / "other_cache"
    out = train(_bpe_cfg(corpus, run, other_cache, "trainer.max_steps=4"))
    assert out["step"] == 4
    assert _vocab(run / "final") == before
    assert not (other_cache / "tokenizers").exists()  # nothing fitted: the checkpoint's tokenizer was used


def test_finetuning_with_a_refitted_tokenizer_is_refused(tmp_path, one_thread):
    """model.init_from a BPE run's checkpoint after its corpus changed: tokenizer=bpe would fit anew and give
    ids other meanings; refused naming them, and the model's own tokenizer (tokenizer=pretrained) trains."""
    corpus, run = write_prescored(tmp_path / "corpus.jsonl", seed=0), tmp_path / "run"
    train(_bpe_cfg(corpus, run, tmp_path / "cache", "trainer.max_steps=2"))
    init = run / "checkpoints" / "step_00000001"
    write_prescored(corpus, n_docs=150, seed=1)
    with pytest.raises(ValueError, match=rf"model.init_from {init} was trained with another tokenizer .*: \d+ of 300 "
                                         r"token ids mean other strings .*tokenizer=pretrained tokenizer.name_or_path="):
        train(_bpe_cfg(corpus, tmp_path / "ft", tmp_path / "cache", "trainer.max_steps=1", f"model.init_from={init}"))
    base = [o for o in fast_overrides(corpus) if not o.startswith(("tokenizer=", "cache_dir="))]
    out = train(compose(base + ["tokenizer=pretrained", f"tokenizer.name_or_path={init}", f"model.init_from={init}",
                                f"run_dir={tmp_path / 'ft2'}", "trainer.max_steps=1"]))
    assert out["step"] == 1 and _vocab(tmp_path / "ft2" / "final") == _vocab(init)


def test_resume_without_the_checkpoint_tokenizer_is_refused(fast_cfg, tmp_path, one_thread):
    run = tmp_path / "run"
    train(fast_cfg("trainer.max_steps=2", "trainer.checkpoint_every=1"))
    (run / "checkpoints" / "step_00000001" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"step_00000001 has no tokenizer.json: a resume continues with the tokenizer "
                                         r"the run trained with.*trainer.resume=never"):
        train(fast_cfg("trainer.max_steps=3", "trainer.checkpoint_every=1"))


# -- deliverable 3: a finished run is never overwritten -----------------------------------------------------------
def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of every file phf-train wrote (final/, config.yaml, metrics.jsonl)."""
    files = [*sorted((run / "final").iterdir()), run / "config.yaml", run / "metrics.jsonl"]
    return {str(f.relative_to(run)): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


def test_rerunning_a_finished_run_with_the_same_config_does_nothing(fast_cfg, tmp_path, one_thread, caplog):
    import logging

    run = tmp_path / "run"
    first = train(fast_cfg("trainer.max_steps=2"))
    before = _snapshot(run)
    with caplog.at_level(logging.INFO, logger="phf.train"):
        again = train(fast_cfg("trainer.max_steps=2", "trainer.lr=1e-3"))  # trainer.* is not the run's identity
    assert again["step"] == 2 and again["train/loss"] == first["train/loss"]
    said = [r.getMessage() for r in caplog.records if "nothing to do" in r.getMessage()]
    assert len(said) == 1 and f"{run} is already finished (final/ at step 2, the same settings)" in said[0]
    assert _snapshot(run) == before  # nothing rewritten, not even touched


def test_rerunning_a_finished_run_with_other_settings_is_refused(fast_cfg, tmp_path, one_thread):
    """The issue's probe: max_steps=4, no checkpoints, then objective=unlikelihood in the same directory."""
    run = tmp_path / "run"
    train(fast_cfg("trainer.max_steps=2"))
    before = _snapshot(run)
    with pytest.raises(FinishedRunError, match=r"holds a finished run \(final/ at step 2\) with settings that differ from the "
                                         r"run's stored config .*config.yaml: objective._target_: 'phf.objectives.MLE' "
                                         r"-> 'phf.objectives.Unlikelihood'.*trainer.overwrite_finished=true"):
        train(fast_cfg("trainer.max_steps=2", "objective=unlikelihood"))
    with pytest.raises(FinishedRunError, match=r"this run ends at step 3 and there is no checkpoint to continue from"):
        train(fast_cfg("trainer.max_steps=3"))
    assert _snapshot(run) == before

    # asked for explicitly: a new run here; the finished one's final/ and config stay readable beside it
    out = train(fast_cfg("trainer.max_steps=3", "objective=unlikelihood", "trainer.overwrite_finished=true"))
    assert out["step"] == 3
    assert json.loads((run / "final" / "phf_objective.json").read_text())["objective_name"] == "unlikelihood"
    kept = run / "final.step_00000002"
    assert {f: b for f, (b, _) in _snapshot(run).items()} != {f: b for f, (b, _) in before.items()}
    assert (kept / "model.safetensors").read_bytes() == before["final/model.safetensors"][0]
    assert (run / "config.step_00000002.yaml").read_bytes() == before["config.yaml"][0]


def test_a_refused_rerun_writes_nothing_into_the_finished_run(tmp_path):
    """phf-train's failure record (error.txt) stays out of a finished run's directory; a sweep still lists the
    refused job in its failures.jsonl. (A single run prints the one-line message and exits with status 2.)"""
    from phf.entry import UsageError, record_failure

    run, sweep = tmp_path / "run", tmp_path / "sweep"
    run.mkdir()
    sweep.mkdir()
    error = FinishedRunError(f"{run} holds a finished run ...")
    assert isinstance(error, UsageError)  # hydra_entry: message only, exit status 2
    record_failure(run, error, ["objective=unlikelihood"], sweep)
    assert list(run.iterdir()) == []
    assert json.loads((sweep / "failures.jsonl").read_text())["overrides"] == ["objective=unlikelihood"]


@pytest.mark.parametrize("error", ["OSError", "SafetensorError"])
def test_disk_full_while_writing_final_leaves_no_half_written_final(fast_cfg, tmp_path, one_thread, monkeypatch, error):
    """safetensors' save (as transformers calls it) fails for final.tmp/ with ENOSPC: as an OSError, or as the
    SafetensorError the real library raises on a full disk."""
    import errno

    import transformers.modeling_utils as mu
    from safetensors import SafetensorError

    run = tmp_path / "run"
    real = mu.safe_save_file

    def full_disk(tensors, filename, *a, **kw):
        if "final.tmp" in str(filename):
            if error == "OSError":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                  '"No space left on device" })')
        return real(tensors, filename, *a, **kw)

    monkeypatch.setattr(mu, "safe_save_file", full_disk)
    with pytest.raises(OSError, match=rf"writing {run / 'final'} \(step 2\) failed: the disk is full \(No space left "
                                      rf"on device\).*The partial copy {run / 'final.tmp'} was removed; the last "
                                      rf"complete one, .*step_00000001, is intact"):
        train(fast_cfg("trainer.max_steps=2", "trainer.checkpoint_every=1"))
    assert not (run / "final").exists() and not (run / "final.tmp").exists()
    monkeypatch.setattr(mu, "safe_save_file", real)
    assert train(fast_cfg("trainer.max_steps=2", "trainer.checkpoint_every=1"))["step"] == 2  # resumes, finishes
    assert (run / "final" / "phf_summary.json").is_file()



# -- wandb identity on resume -----------------------------------------------------------------------------------------
def test_deleted_wandb_run_json_on_resume_is_said_and_the_run_continues(fast_cfg, tmp_path, one_thread, caplog):
    import logging

    from phf.tracking import RUN_ID_FILE

    run = tmp_path / "run"
    train(fast_cfg("logger=wandb_offline", "trainer.max_steps=2", "trainer.checkpoint_every=1"))
    first = json.loads((run / RUN_ID_FILE).read_text())["id"]
    (run / RUN_ID_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="phf.tracking"):
        train(fast_cfg("logger=wandb_offline", "trainer.max_steps=3", "trainer.checkpoint_every=1"))
    assert f"{run / RUN_ID_FILE} is missing: continuing the wandb run {first} found in {run / 'wandb'}" in caplog.text
    assert json.loads((run / RUN_ID_FILE).read_text())["id"] == first  # not a silent new run id

    # with no trace of the old run left either, the new run id is a warning naming the file, never silent
    (run / RUN_ID_FILE).unlink()
    shutil.rmtree(run / "wandb")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="phf.tracking"):
        train(fast_cfg("logger=wandb_offline", "trainer.max_steps=4", "trainer.checkpoint_every=1"))
    assert f"{run / RUN_ID_FILE} is missing and {run / 'wandb'} holds none: this resume starts a NEW wandb run" \
        in caplog.text


def test_wandb_run_id_with_a_slash_is_refused_before_anything_is_cut_back(fast_cfg, tmp_path, one_thread, monkeypatch):
    from phf.tracking import RUN_ID_FILE

    run = tmp_path / "run"
    train(fast_cfg("logger=wandb_offline", "trainer.max_steps=2", "trainer.checkpoint_every=1"))
    (run / RUN_ID_FILE).write_text(json.dumps({"id": "team/run-1"}))
    metrics = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(ValueError, match=rf"{run / RUN_ID_FILE}: wandb run id 'team/run-1' contains '/', which a wandb "
                                         r"run id cannot hold.*nothing was changed"):
        train(fast_cfg("logger=wandb_offline", "trainer.max_steps=3", "trainer.checkpoint_every=1"))
    assert (run / "metrics.jsonl").read_bytes() == metrics  # not cut back to the checkpoint's step
    assert json.loads((run / "final" / "phf_summary.json").read_text())["step"] == 2

    monkeypatch.setenv("WANDB_RUN_ID", "a:b")
    with pytest.raises(ValueError, match=r"WANDB_RUN_ID: wandb run id 'a:b' contains ':'"):
        train(fast_cfg("logger=wandb_offline", "trainer.max_steps=1", run_dir=tmp_path / "fresh"))
    assert not (tmp_path / "fresh" / "metrics.jsonl").exists()


# -- the data worker dies with its trainer ------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_an_idle_orphaned_data_worker_exits():
    """The portable half: a worker whose parent is no longer the process it was started for (here: told to
    expect another parent pid) exits at its next idle check, ``data.worker_check_seconds`` later."""
    import multiprocessing
    import types

    from phf.data.pipeline import _worker_loop

    ctx = multiprocessing.get_context("fork")
    stream = types.SimpleNamespace(worker_check_seconds=0.1)
    tasks, results = ctx.Queue(), ctx.Queue()
    worker = ctx.Process(target=_worker_loop, args=(stream, tasks, results, -1, False), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert worker.exitcode == 1  # ended itself; a worker of a live parent would wait for batches forever
    tasks.close()
    results.close()


@pytest.mark.slow  # a phf.train subprocess: ~20 s on a loaded 2-core machine
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_data_worker_dies_with_its_killed_trainer_and_the_lock_is_free(fast_cfg, tmp_path, prescored, one_thread):
    """kill -9 of the trainer alone (not its process group): its data worker is gone within seconds and a new
    training in the same run directory is not refused as "in use by PID" of the dead trainer."""
    import os
    import signal
    import subprocess
    import time

    from tests.reliability.harness import after_step, command, env

    run = tmp_path / "run"
    args = [*fast_overrides(prescored), "data.num_workers=1", "data.worker_check_seconds=0.5",
            "trainer.max_steps=100000"]
    err = open(tmp_path / "train.stderr", "wb")  # a file, not a pipe: a full pipe would stall the trainer
    proc = subprocess.Popen(command(run, base=args), env=env(), stdout=subprocess.DEVNULL, stderr=err)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not after_step(1)(run):
            assert proc.poll() is None, (tmp_path / "train.stderr").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no training step within 240 s"
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert workers, "no data worker process"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), f"data workers {workers} outlived the killed trainer by 5 s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # a worker that outlived the test's trainer
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        err.close()
    assert train(fast_cfg("trainer.max_steps=1", "trainer.resume=never"))["step"] == 1  # not refused as in use
