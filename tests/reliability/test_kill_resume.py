"""kill -9 at random moments, resume with trainer.resume=auto, get the uninterrupted run's result.

Each case runs ``python -m phf.train`` in a subprocess, SIGKILLs its process group when a trigger fires
(after a given step's metrics row, while a ``step_*.tmp`` checkpoint directory exists, while
``final/`` is being written), restarts it until it completes and compares the final weights
(max |Δ| ≤ 1e-6) and every loss row with an uninterrupted run. ``PHF_KILL_SEED=N`` replays a case.
"""

from __future__ import annotations

import os
import random
import shutil

import pytest
import torch

from phf import checkpoint as ckpt
from phf.tracking import read_metrics
from phf.train import train
from tests.conftest import compose
from tests.reliability.conftest import fast_overrides
from tests.reliability.harness import (
    after_step,
    final_weights,
    loss_rows,
    max_abs_diff,
    mid_checkpoint,
    mid_checkpoint_from,
    mid_final,
    run_until,
)


def _straight(tmp_path, *overrides):
    run = tmp_path / "straight"
    out = run_until(run, None, *overrides)
    assert out.returncode == 0, out.stderr
    return run


def _kill_and_resume(tmp_path, triggers, *overrides):
    """Kill at each trigger in turn (a trigger that never fires lets the run finish), then finish."""
    run = tmp_path / "killed"
    log = []
    for trigger in triggers:
        out = run_until(run, trigger, *overrides)
        log.append((trigger.label, out))
        if not out.killed:
            assert out.returncode == 0, out.stderr
            return run, log
        assert out.returncode == -9, out.stderr
    out = run_until(run, None, *overrides)
    log.append(("to the end", out))
    assert out.returncode == 0, f"the resumed run failed after {_describe(log)}:\n{out.stderr}"
    return run, log


def _describe(log) -> str:
    return "; ".join(f"{label}: killed={o.killed} last_step={o.last_step} manifest={o.manifest} "
                     f"ckpts={o.entries} ({o.seconds:.1f}s)" for label, o in log)


def _assert_same(straight, killed, log):
    diff = max_abs_diff(final_weights(straight), final_weights(killed))
    print(f"max |Δw| = {diff}")
    assert diff <= 1e-6, f"max |Δw| = {diff} after {_describe(log)}"
    assert loss_rows(killed) == loss_rows(straight), _describe(log)
    leftovers = [e for e in os.listdir(killed / "checkpoints") if e.endswith(".tmp") or e.startswith("pending_")]
    assert not leftovers, leftovers


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("objective, workers", [("mle", 0), ("awr", 1)], ids=["mle", "awr-1-data-worker"])
def test_kill9_at_random_moments_resumes_exactly(tmp_path, objective, workers):
    """Six kills: at a random step after the first checkpoint, inside two checkpoint writes, at two
    more random steps and while final/ is written; AWR adds the value head (its weights compared
    too) and a data worker process (killed with the trainer)."""
    seed = int(os.environ.get("PHF_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    overrides = (f"objective={objective}", f"data.num_workers={workers}", "trainer.max_steps=12",
                 "trainer.eval_every=5")
    straight = _straight(tmp_path, *overrides)
    triggers = [after_step(rng.randint(3, 4)), mid_checkpoint, after_step(rng.randint(6, 8)), mid_checkpoint,
                after_step(rng.randint(9, 11)), mid_final]
    killed, log = _kill_and_resume(tmp_path, triggers, *overrides)
    print(f"PHF_KILL_SEED={seed}: {_describe(log)}")
    assert sum(o.killed for _, o in log) >= 5, _describe(log)
    mid = [o for label, o in log if label == "mid-checkpoint" and o.killed]
    assert mid and all(any(e.endswith(".tmp") for e in o.entries) for o in mid), _describe(log)
    _assert_same(straight, killed, log)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill9_before_the_first_checkpoint_restarts_cleanly(tmp_path):
    """Killed after step 1 and inside the first checkpoint write: no manifest, so the run starts
    over; the metrics rows of the killed attempts must not stay behind."""
    overrides = ("trainer.max_steps=4",)
    straight = _straight(tmp_path, *overrides)
    killed, log = _kill_and_resume(tmp_path, [after_step(1), mid_checkpoint], *overrides)
    assert [o.manifest for _, o in log[:2]] == [None, None], _describe(log)
    _assert_same(straight, killed, log)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill9_during_a_checkpoint_write_then_resume(tmp_path, prescored):
    """The short variant: one real kill -9 inside the step-4 (or step-6) checkpoint write; the
    resume and the reference run in-process with the same thread count as the killed process.
    Slow all the same: the subprocess's imports alone take ~8 s of CPU (68 s wall on a loaded
    2-core machine), over the fast suite's budget."""
    base = fast_overrides(prescored) + ["trainer.checkpoint_every=2", "trainer.keep_checkpoints=2"]
    args = ["trainer.max_steps=8"]
    killed = tmp_path / "killed"
    out = run_until(killed, mid_checkpoint_from(4), *args, base=base, threads=torch.get_num_threads())
    assert out.killed, f"no checkpoint write was caught in progress: {out.entries}\n{out.stderr}"
    assert out.manifest in (2, 4) and any(e.endswith(".tmp") for e in out.entries), out.entries
    resumed_from = out.manifest

    train(compose(base + args + [f"run_dir={killed}"]))  # trainer.resume=auto
    train(compose(base + args + [f"run_dir={tmp_path / 'straight'}"]))

    diff = max_abs_diff(final_weights(tmp_path / "straight"), final_weights(killed))
    assert diff <= 1e-6, diff
    assert loss_rows(killed) == loss_rows(tmp_path / "straight")
    assert [r["step"] for r in read_metrics(killed) if "params" in r] == [0, resumed_from]  # one start row each
    assert sorted(os.listdir(killed / "checkpoints")) == ["latest.json", "step_00000004", "step_00000006"]


def test_restart_without_a_checkpoint_does_not_duplicate_metrics(fast_cfg, tmp_path):
    """A run killed before its first checkpoint left rows 0..2; the restart starts over and must
    replace them, not append a second copy."""
    train(fast_cfg("trainer.max_steps=2"))
    shutil.rmtree(tmp_path / "run" / "final")  # as if killed after step 2, before anything else
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints") is None
    train(fast_cfg("trainer.max_steps=2"))
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "loss" in r] == [1, 2]



def test_resume_after_a_torn_metrics_row(fast_cfg, tmp_path):
    """A kill in the middle of a metrics.jsonl write leaves a partial last line; resuming drops it."""
    args = ("trainer.max_steps=4", "trainer.checkpoint_every=2")
    train(fast_cfg(*args))
    before = loss_rows(tmp_path / "run")
    run = tmp_path / "run"
    rows = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"step": 3' in line or
            '"step": 4' in line]
    shutil.rmtree(run / "final")  # as if killed while logging step 3: resume from step 2
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[: text.index(rows[0])] + rows[0][:25])
    train(fast_cfg(*args))
    assert loss_rows(run) == before  # rows 1-2 kept, the torn row dropped, 3-4 logged again
