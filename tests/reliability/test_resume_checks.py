"""Resuming a run: what a checkpoint must have (an AWR value head), settings that changed, max_steps changed,
and a damaged metrics.jsonl (its bad rows are kept aside, not lost).
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from phf.train import train


# -- an AWR checkpoint without its value head ----------------------------------------------------------------------
def test_awr_checkpoint_without_value_head_is_refused(fast_cfg, tmp_path):
    run = tmp_path / "run"
    train(fast_cfg("objective=awr", "trainer.max_steps=2", "trainer.checkpoint_every=1"))
    head = run / "checkpoints" / "step_00000001" / "value_head.safetensors"
    assert head.is_file()
    head.unlink()
    with pytest.raises(ValueError, match=r"step_00000001 has no value_head.safetensors but objective AWR trains a "
                                         r"value head.*trainer.resume=never"):
        train(fast_cfg("objective=awr", "trainer.max_steps=3", "trainer.checkpoint_every=1"))


# -- resuming with other settings ----------------------------------------------------------------------------------
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


# -- max_steps changed on resume ----------------------------------------------------------------------------------
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


# -- resuming over a damaged metrics.jsonl -------------------------------------------------------------------------------------
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
