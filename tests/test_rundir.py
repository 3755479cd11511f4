"""phf.rundir: the run directory's names, the one non-finite rule, and readers of what older versions wrote."""

import json
import math

import pytest

from phf import rundir


def test_step_names_have_eight_digits_and_any_width_reads():
    """One name for a step's folder: step_ + 8 digits (1500 -> step_00001500); the 7-digit sample folders of
    earlier versions (step_0001500) and a checkpoint's .tmp name parse to the same step."""
    assert rundir.step_name(1500) == "step_00001500"
    assert rundir.parse_step("step_00001500") == rundir.parse_step("step_0001500") == 1500
    assert rundir.parse_step("step_00000006.tmp") == 6 and rundir.parse_step("step_0000020.jsonl") == 20
    assert rundir.parse_step("step_x") is None and rundir.parse_step("step_12abc") is None
    assert rundir.kept_config_path("R", 2).name == "config.step_00000002.yaml"
    assert rundir.kept_final_path("R", 2).name == "final.step_00000002"


def test_step_folders_sort_by_step_whatever_their_width(tmp_path):
    """step_0000900 (old width) < step_00001000 (new width): by number, not by text."""
    for name in ("step_00001000", "step_0000900", "step_00000050"):
        (tmp_path / "samples" / name).mkdir(parents=True)
        (tmp_path / "samples" / name / "unconditional.jsonl").write_text(json.dumps({"text": name, "score": 0}) + "\n")
    assert [p.name for p in rundir.step_paths(tmp_path / "samples")] == ["step_00000050", "step_0000900", "step_00001000"]
    assert rundir.read_last_samples(tmp_path)["unconditional"][0]["text"] == "step_00001000"
    assert sorted(rundir.evaluation_steps(tmp_path)) == [50, 900, 1000]


def test_non_finite_numbers_are_written_as_null_and_read_as_nan(tmp_path):
    """NaN and ±inf -> null on write (nested too, numpy scalars too); ``number`` reads null as NaN."""
    import numpy as np

    doc = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": np.float32("-inf")}, "e": 2}
    rundir.write_summary(tmp_path, doc)
    text = (tmp_path / rundir.SUMMARY).read_text()
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2}
    assert "NaN" not in text and "Infinity" not in text
    back = rundir.read_summary(tmp_path)
    assert math.isnan(rundir.number(back["a"])) and rundir.number(back["b"][0]) == 1.0


def test_old_encodings_of_non_finite_numbers_read_as_what_they_meant(tmp_path):
    """The tracker and phf-spa wrote "nan"/"inf"/"-inf" strings, Python's json bare NaN/Infinity: all read back."""
    (tmp_path / rundir.METRICS).write_text('{"step": 1, "loss": "nan", "g": "inf", "h": "-inf"}\n'
                                           '{"step": 2, "loss": NaN, "g": Infinity, "h": 1.5}\n')
    rows = rundir.read_metrics(tmp_path)
    assert math.isnan(rundir.number(rows[0]["loss"])) and math.isnan(rundir.number(rows[1]["loss"]))
    assert rundir.number(rows[0]["g"]) == rundir.number(rows[1]["g"]) == math.inf
    assert rundir.number(rows[0]["h"]) == -math.inf and rundir.number(rows[1]["h"]) == 1.5
    assert math.isnan(rundir.number(True)) and math.isnan(rundir.number("loss"))


def test_tracker_rows_round_trip_with_null_for_non_finite(tmp_path):
    from phf.tracking import Tracker

    tracker = Tracker(run_dir=tmp_path)
    tracker.log({"tokens_seen": 8, "loss": float("nan"), "ok": 0.5}, step=1)
    tracker.finish()
    assert (tmp_path / rundir.METRICS).read_text() == '{"step": 1, "tokens_seen": 8, "loss": null, "ok": 0.5}\n'
    assert rundir.read_metrics(tmp_path) == [{"step": 1, "tokens_seen": 8, "loss": None, "ok": 0.5}]
    assert rundir.tokens_at_step(tmp_path, 1) == 8 and rundir.tokens_at_step(tmp_path, 2) is None


def test_metrics_reader_skips_a_torn_last_line_and_names_any_other_bad_line(tmp_path):
    path = tmp_path / rundir.METRICS
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    assert rundir.read_metrics(tmp_path) == [{"step": 1}]
    path.write_text('{"step": 1}\n[1]\n{"step": 3}\n')
    with pytest.raises(rundir.DamagedRun, match=r"metrics.jsonl:2: expected a JSON object, got list"):
        rundir.read_metrics(tmp_path)
    assert rundir.read_metrics(tmp_path / "none") == []


def test_config_eval_and_samples_round_trip(tmp_path):
    rundir.write_config(tmp_path, {"task": {"name": "pii"}, "seed": 3})
    assert rundir.is_run(tmp_path) and rundir.read_config(tmp_path) == {"task": {"name": "pii"}, "seed": 3}
    rundir.write_eval(tmp_path, {"scenarios": {"u": {"score": float("nan")}}, "tokens_seen": 5})
    assert rundir.read_eval(tmp_path) == {"scenarios": {"u": {"score": None}}, "tokens_seen": 5}
    rundir.write_samples(tmp_path, 20, "u", [{"text": "a", "score": 0.5, "step": 20}])
    assert (tmp_path / "samples" / "step_00000020" / "u.jsonl").is_file()
    assert rundir.read_last_samples(tmp_path) == {"u": [{"text": "a", "score": 0.5, "step": 20}]}
    rundir.write_samples(tmp_path, None, "u", [{"text": "b", "score": 1.0}])  # phf-eval's: preferred
    assert rundir.read_last_samples(tmp_path)["u"][0]["text"] == "b"
    rundir.write_heldout_clean(tmp_path, 20, [{"id": "d", "nll": 2.0, "tokens": 4}])
    assert rundir.read_heldout_clean(tmp_path) == {"d": (2.0, 4)}


def test_bad_run_files_are_named(tmp_path):
    (tmp_path / rundir.EVAL).write_text('{"scenarios": []}')
    with pytest.raises(rundir.DamagedRun, match=r"eval.json: 'scenarios' must be an object, got list"):
        rundir.read_eval(tmp_path)
    (tmp_path / rundir.CONFIG).write_text("- a\n")
    with pytest.raises(rundir.DamagedRun, match=r"config.yaml: expected a mapping, got list"):
        rundir.read_config(tmp_path)
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "u.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(rundir.DamagedRun, match=r"u.jsonl:1: a sample row needs 'text' and 'score'"):
        rundir.read_last_samples(tmp_path)


def test_a_model_directory_knows_its_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000004").mkdir(parents=True)
    (run / "final").mkdir()
    assert rundir.run_of_model(run / "final") == run.resolve()
    assert rundir.run_of_model(run / "checkpoints" / "step_00000004") == run.resolve()
    assert rundir.run_of_model(tmp_path) is None
    assert not rundir.is_run_final(run / "final")  # no config.yaml next to it: not a run's final/
    rundir.write_config(run, {})
    assert rundir.is_run_final(run / "final") and not rundir.is_finished(run)
    rundir.write_summary(run / "final", {"step": 4})
    assert rundir.is_finished(run)
    assert rundir.sweep_job_name(tmp_path / "3-conditional") == "conditional" and rundir.sweep_job_name(run) is None
