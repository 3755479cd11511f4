"""Round 3, phf-report inputs (issue 27): a run still training is reported as in progress, the objective
comes from the run's config.yaml, and an unwritable ``--out`` is a one-line error naming it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from phf import report


def training_run(root, name="3-mle", objective="phf.objectives.conditional.Conditional", steps=3, max_steps=10):
    """What a phf-train run directory holds while it trains: config, metrics, checkpoints, no final/."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"seed: 1\ntask:\n  name: pep8\ntrainer:\n  max_steps: {max_steps}\n"
                                     f"objective:\n  _target_: {objective}\n  threshold: 0.0\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 5.0 - s, "tokens_seen": 64 * s}) + "\n"
                                               for s in range(1, steps + 1)))
    return run


def test_report_on_a_run_still_training_says_so(tmp_path):
    """The run's lock names a live process (here a sleeping child): "in progress", not "no eval.json"; the
    objective is the config's (conditional), not the directory's name (3-mle)."""
    run = training_run(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "phf.lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        row = report.build_report([run], tmp_path / "out")["table"][0]
        assert row["status"] == f"in progress: training (step 3 of 10, PID {sleeper.pid}), no final evaluation yet"
        assert row["objective"] == "conditional"
    finally:
        sleeper.kill()
        sleeper.wait()
    row = report.build_report([run], tmp_path / "out")["table"][0]  # the trainer is gone, final/ never came
    assert row["status"] == "incomplete: stopped at step 3 of 10 without a complete final/ (resume with trainer.resume=auto)"


def test_report_of_a_finished_run_is_unchanged(tmp_path):
    run = training_run(tmp_path, name="run", objective="phf.objectives.guided_mle.GuidedMLE")
    (run / "final").mkdir()
    (run / "final" / "phf_summary.json").write_text("{}")
    (run / "phf.lock").write_text("")  # released
    row = report.build_report([run], tmp_path / "out")["table"][0]
    assert row["status"] == "no eval.json" and row["objective"] == "guided_mle"


@pytest.mark.parametrize("objective", ["phf.objectives.unlikelihood.Unlikelihood", "phf.objectives.awr.AWR",
                                       "my.pkg.FancyObjective"])
def test_objective_name_comes_from_the_config(tmp_path, objective):
    expected = {"Unlikelihood": "unlikelihood", "AWR": "awr", "FancyObjective": "fancy_objective"}
    cfg = {"objective": {"_target_": objective}}
    assert report.objective_name(tmp_path / "0-mle", cfg) == expected[objective.rsplit(".", 1)[-1]]
    assert report.objective_name(tmp_path / "0-mle", {}) == "mle"  # no readable config: the sweep job's name


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_unwritable_out_is_a_one_line_error_naming_it(tmp_path, where):
    run = training_run(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "report"
    with pytest.raises(SystemExit) as e:
        report.main([str(run), "--out", str(out)])
    msg = str(e.value)
    assert msg.startswith(f"phf-report: cannot write the report into {out} (") and "\n" not in msg
    assert "--out must be a writable directory" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_is_a_one_line_error(tmp_path):
    run = training_run(tmp_path)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match=rf"phf-report: cannot write the report into {out} \(Permission denied"):
            report.main([str(run), "--out", str(out)])
    finally:
        out.chmod(0o755)
