"""Checkpoints on by default (issue 28, item 3): ``trainer.checkpoint_every_s`` writes one after that much
wall time, so a killed run resumes with the same command; a finished run re-run does nothing."""

from __future__ import annotations

import logging

from phf import checkpoint as ckpt
from phf.train import train
from tests.conftest import compose


def test_checkpoints_are_on_by_default():
    cfg = compose([]).trainer
    assert cfg.checkpoint_every == 0 and cfg.checkpoint_every_s > 0  # by wall time, whatever the run's speed


def test_wall_time_checkpoints_resume_and_a_finished_rerun_does_nothing(fast_cfg, tmp_path, one_thread, caplog):
    """checkpoint_every_s=1e-9: every step is past the interval, so steps 1 and 2 of 3 are checkpointed (the
    last step is final/); a run killed after step 2 (final/ removed) resumes from step 2 to the uninterrupted
    run's loss; the finished run re-run with the same command does nothing and rewrites nothing."""
    run = tmp_path / "run"
    args = ("trainer.max_steps=3", "trainer.checkpoint_every_s=1e-9", "trainer.keep_checkpoints=2")
    first = train(fast_cfg(*args))
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000001", "step_00000002"]
    final_files = {f.name: f.stat().st_mtime_ns for f in (run / "final").iterdir()}
    with caplog.at_level(logging.INFO, logger="phf.train"):
        again = train(fast_cfg(*args))
    assert again == first and "is already finished" in caplog.text
    assert {f.name: f.stat().st_mtime_ns for f in (run / "final").iterdir()} == final_files

    killed = tmp_path / "killed"  # the same run, killed after its step-2 checkpoint: final/ never written
    train(fast_cfg(*args, run_dir=killed))
    import shutil

    shutil.rmtree(killed / "final")
    assert ckpt.latest_checkpoint(killed / "checkpoints").name == "step_00000002"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="phf.train"):
        resumed = train(fast_cfg(*args, run_dir=killed))
    assert resumed["step"] == 3 and resumed["train/loss"] == first["train/loss"]
    assert "checkpoints: every 1e-09 s" in caplog.text
