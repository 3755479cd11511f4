"""A hand-made SPA run in the legacy layout (samples under RUN/init/ and RUN/<stage>/, seven-digit step
folders, no final/, no tokens_seen) is refused by phf-report with the migration named, and after
``python -m phf.spa.migrate`` reads as a current SPA run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from phf import rundir
from phf.report.runs import load_run
from phf.spa.migrate import main

START_TOKENS = 1000  # the starting model's phf_summary.json


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _model(path: Path, row: dict, weights: bytes) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    (path / "phf_summary.json").write_text(json.dumps(row))


def legacy_run(tmp_path: Path) -> Path:
    """What phf-spa wrote before it used phf-train's layout: init + two stages (2 and 1 DPO steps)."""
    start = tmp_path / "start"
    _model(start, {"step": 10, "tokens_seen": START_TOKENS}, b"start")
    run = tmp_path / "spa"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "task": {"name": "pii"}, "objective": {"_target_": "phf.objectives.DPO"}, "spa": {"init_from": str(start)}}))
    init = {"stage": "init", "spa/stage": -1, "eval/unconditional/score": 0.5}
    seed = {"stage": "seed", "spa/stage": 0, "spa/steps": 2, "spa/cumulative/tokens_trained": 300,
            "eval/unconditional/score": 0.4}
    round1 = {"stage": "round1", "spa/stage": 1, "spa/steps": 1, "spa/cumulative/tokens_trained": 450,
              "eval/unconditional/score": "nan"}  # the old encoding of NaN
    _jsonl(rundir.metrics_path(run), [{"step": 0, **init}, {"step": 1, "dpo/loss": 0.7}, {"step": 2, "dpo/loss": 0.6},
                                      {"step": 2, **seed}, {"step": 3, "dpo/loss": 0.5}, {"step": 3, **round1}])
    (run / "spa_summary.json").write_text(json.dumps({"init_from": str(start), "stages": [init, seed, round1]}))
    (run / "init" / "phf_summary.json").parent.mkdir()
    (run / "init" / "phf_summary.json").write_text(json.dumps(init))
    for stage, step in (("init", 0), ("seed", 2), ("round1", 3)):
        _jsonl(run / stage / "samples" / f"step_{step:07d}" / "unconditional.jsonl",
               [{"prompt": "", "text": f"{stage} sample {i}", "score": i / 4, "step": step} for i in range(2)])
    _jsonl(run / "round1" / "heldout_clean" / "step_0000003.jsonl", [{"id": "d1", "nll": 2.5, "tokens": 10}])
    _model(run / "seed" / "final", seed, b"seed weights")
    _model(run / "round1" / "final", round1, b"round1 weights")
    return run


def test_phf_report_names_the_migration_for_a_legacy_spa_run(tmp_path):
    run = legacy_run(tmp_path)
    assert rundir.is_legacy_spa(run)
    loaded = load_run(run)
    assert loaded.damaged is not None and f"python -m phf.spa.migrate {run}" in loaded.damaged


def test_migration_moves_a_legacy_spa_run_into_the_current_layout(tmp_path, capsys):
    run = legacy_run(tmp_path)
    old_metrics = rundir.metrics_path(run).read_text()
    old_summary = (run / "spa_summary.json").read_text()
    assert main([str(run)]) == 0
    assert "migrated" in capsys.readouterr().out

    # samples and clean held-out losses at the global DPO step, eight-digit names; the stage folders emptied
    assert sorted(rundir.evaluation_steps(run)) == [0, 2, 3]
    assert [p.name for p in rundir.step_paths(run / "samples")] == ["step_00000000", "step_00000002", "step_00000003"]
    assert not (run / "seed" / "samples").exists() or not any((run / "seed" / "samples").iterdir())
    assert [r["text"] for r in rundir.read_last_samples(run)["unconditional"]] == ["round1 sample 0", "round1 sample 1"]
    assert rundir.read_heldout_clean(run) == {"d1": (2.5, 10)}

    # tokens_seen: the start's 1000, + 300 after the seed, + 450 after round 1; DPO rows carry the last stage's
    assert [r["tokens_seen"] for r in rundir.read_metrics(run)] == [1000, 1000, 1000, 1300, 1300, 1450]
    summary = json.loads((run / "spa_summary.json").read_text())
    assert [r["tokens_seen"] for r in summary["stages"]] == [1000, 1300, 1450]
    assert (run / "metrics.legacy.jsonl").read_text() == old_metrics
    assert (run / "spa_summary.legacy.json").read_text() == old_summary

    # final/: the last stage's model, its row at the run's last step as phf_summary.json
    assert (run / "final" / "model.safetensors").read_bytes() == b"round1 weights"
    final = rundir.read_summary(run / "final")
    assert final["step"] == 3 and final["tokens_seen"] == 1450 and final["stage"] == "round1"
    assert rundir.is_finished(run) and not rundir.is_legacy_spa(run)

    # phf-report reads it as a run now
    loaded = load_run(run)
    assert loaded.damaged is None and loaded.task == "pii" and loaded.objective == "dpo"
    assert [s["score"] for s in loaded.samples["unconditional"]] == [0.0, 0.25]

    # once only: a second call changes nothing
    assert main([str(run)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_migration_refuses_to_overwrite_and_needs_the_start_tokens(tmp_path):
    run = legacy_run(tmp_path)
    _jsonl(run / "samples" / "step_00000002" / "unconditional.jsonl", [{"text": "x", "score": 0.0}])
    with pytest.raises(SystemExit, match=r"not migrated, these already exist: .*samples/step_00000002"):
        main([str(run)])
    assert (run / "seed" / "samples" / "step_0000002").is_dir()  # nothing moved
    assert not (run / "final").exists()

    other = legacy_run(tmp_path / "b")
    for f in (tmp_path / "b" / "start").iterdir():
        f.unlink()
    (tmp_path / "b" / "start").rmdir()
    with pytest.raises(SystemExit, match=r"spa\.init_from=.*is not a directory here; give them \(start_tokens=N"):
        main([str(other)])
    assert main([str(other), "start_tokens=7"]) == 0
    assert rundir.read_summary(other / "final")["tokens_seen"] == 7 + 450
