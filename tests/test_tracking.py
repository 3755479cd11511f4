"""wandb as its users expect it, checked offline by reading back what wandb wrote (``RUN_DIR/wandb/``):
one wandb run across a kill and a resume, ``tokens_seen`` as every chart's x-axis, sweep jobs grouped and
named, growing sample tables, AWR weight histograms, phf-eval's run linked to the training run, and
phf-report's plots logged as images."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import phf.trainer
from phf.tracking import RUN_ID_FILE, Tracker, last_logged_step, offline_records, read_metrics
from phf.train import train
from tests.conftest import TINY
from tests.experiments.conftest import run_phf_train

EVAL = ["task.eval.scenarios.unconditional.num_samples=4", "task.eval.scenarios.unconditional.max_new_tokens=8",
        "~task.eval.scenarios.functions", "~task.eval.scenarios.red_team_prompts"]


def wandb_files(run_dir: Path) -> list[Path]:
    """The transaction logs of every wandb process that wrote into ``run_dir``, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def complete_records(path: Path, timeout_s: float = 60.0) -> list:
    """The records of a wandb transaction log once its ``exit`` record is written: in offline mode
    wandb's service process writes the log after ``finish()`` has returned, so a log read at once can
    still lack the last rows. After ``timeout_s`` (a run killed before its exit) the records so far."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(offline_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_back(path: Path) -> dict:
    """What one wandb process wrote: its run record, metric definitions and history rows ({key: value})."""
    out: dict = {"run": None, "metrics": [], "history": [], "config": {}}
    for r in complete_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "metric":
            out["metrics"].append((r.metric.name, r.metric.glob_name, r.metric.step_metric))
        elif kind == "history":
            row = {"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json)
                   for i in r.history.item}
            out["history"].append(row)
    return out


def test_resumed_run_continues_the_same_wandb_run(tiny_cfg, tmp_path, monkeypatch, one_thread):
    """Killed after logging step 5 (last checkpoint: step 4), resumed: one wandb id, the resumed process
    sends steps 6.. only (step 5, recomputed, stays in metrics.jsonl), every row has tokens_seen on the
    tokens_seen x-axis, and the AWR weight/value histograms are there with their quantiles in metrics.jsonl."""
    args = ("logger=wandb_offline", "objective=awr", "trainer.max_steps=7", "trainer.checkpoint_every=2",
            "trainer.keep_checkpoints=1")
    run = tmp_path / "run"
    real = phf.trainer.TrainingLoop.checkpoint_if_due

    def kill_after_step_5(self):
        real(self)
        if self.step == 5:
            raise KeyboardInterrupt("simulated kill after step 5 was logged")

    monkeypatch.setattr(phf.trainer.TrainingLoop, "checkpoint_if_due", kill_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(*args))
    first_id = json.loads((run / RUN_ID_FILE).read_text())["id"]
    monkeypatch.setattr(phf.trainer.TrainingLoop, "checkpoint_if_due", real)
    assert last_logged_step(run / "wandb", first_id) == 5
    train(tiny_cfg(*args))

    stored = json.loads((run / RUN_ID_FILE).read_text())
    assert stored["id"] == first_id and stored["mode"] == "offline" and stored["name"] == "pep8-awr"
    files = wandb_files(run)
    assert len(files) == 2 and all(f.name == f"run-{first_id}.wandb" for f in files)
    before, after = (read_back(f) for f in files)
    assert before["run"].run_id == after["run"].run_id == first_id
    assert sorted(after["run"].tags) == ["awr", "pep8"]
    for part in (before, after):
        assert ("tokens_seen", "", "") in part["metrics"] and ("", "*", "tokens_seen") in part["metrics"]
        assert all("tokens_seen" in row for row in part["history"])
    steps_before = [row["_step"] for row in before["history"]]
    steps_after = [row["_step"] for row in after["history"]]
    assert steps_before == [0, 1, 2, 3, 4, 5] and steps_after == [6, 7]  # no step twice in the one run
    tokens = {row["_step"]: row["tokens_seen"] for part in (before, after) for row in part["history"]}
    assert tokens == {s: 64 * s for s in range(8)}  # 2 sequences x 32 tokens per step
    hist = after["history"][-1]
    assert hist["hist/weight/_type"] == "histogram" and sum(hist["hist/weight/values"]) > 0
    assert hist["hist/value/_type"] == "histogram"

    rows = read_metrics(run)  # the source of truth: step 5 once (the resumed run's), quantiles for the histograms
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6, 7]
    assert all(r["tokens_seen"] == 64 * r["step"] for r in rows)
    last = train_rows[-1]
    assert last["hist/weight_p05"] <= last["hist/weight_p50"] <= last["hist/weight_p95"]
    assert last["hist/value_p05"] <= last["hist/value_p95"]
    # every scalar wandb got is in metrics.jsonl (a histogram's parts: its quantiles are)
    for row in after["history"]:
        jsonl = {k for r in rows if r["step"] == row["_step"] for k in r}
        scalars = {k for k in row if not k.startswith("_") and not k.endswith(("/_type", "/values", "/bins"))}
        assert scalars and scalars <= jsonl, scalars - jsonl


def test_fresh_start_gets_a_new_wandb_run(tiny_cfg, tmp_path):
    """trainer.resume=never replaces metrics.jsonl, so it must not continue the old wandb run either."""
    run = tmp_path / "run"
    train(tiny_cfg("logger=wandb_offline", "trainer.max_steps=1"))
    first = json.loads((run / RUN_ID_FILE).read_text())["id"]
    train(tiny_cfg("logger=wandb_offline", "trainer.max_steps=1", "trainer.resume=never",
                   "trainer.overwrite_finished=true"))  # a finished run is trained again only when asked
    second = json.loads((run / RUN_ID_FILE).read_text())["id"]
    assert first != second
    assert {read_back(f)["run"].run_id for f in wandb_files(run)} == {first, second}


def test_sample_tables_grow_across_evaluations(tiny_cfg, tmp_path, one_thread):
    """One samples/<scenario> table: the evaluations at steps 2 and 4 append rows with step and tokens_seen."""
    run = tmp_path / "run"
    train(tiny_cfg("logger=wandb_offline", "trainer.max_steps=4", "trainer.final_eval=true",
                   "task.eval.every_steps=2", *EVAL))
    (part,) = (read_back(f) for f in wandb_files(run))
    tables = [row for row in part["history"] if "samples/unconditional/_type" in row]
    assert [(t["_step"], t["samples/unconditional/nrows"]) for t in tables] == [(2, 4), (4, 8)]
    assert all(t["samples/unconditional/log_mode"] == "INCREMENTAL" for t in tables)
    files = sorted((run / "wandb").glob("offline-run-*/files/media/table/samples/unconditional_*.table.json"))
    increments = [json.loads(f.read_text()) for f in files]
    assert increments[0]["columns"] == ["step", "tokens_seen", "prompt", "text", "score", "num_tokens"]
    assert sorted((r[0], r[1]) for inc in increments for r in inc["data"]) == [(2, 128)] * 4 + [(4, 256)] * 4
    eval_rows = [row for row in part["history"] if "eval/unconditional/score" in row]
    assert [(r["_step"], r["tokens_seen"]) for r in eval_rows] == [(2, 128), (4, 256)]


def test_phf_eval_run_is_linked_to_the_training_run(tiny_cfg, tmp_path):
    from phf.eval.cli import evaluate_saved

    run = tmp_path / "run"
    train(tiny_cfg("logger=wandb_offline", "trainer.max_steps=2", "trainer.checkpoint_every=1", *EVAL))
    training_id = json.loads((run / RUN_ID_FILE).read_text())["id"]
    evaluate_saved({"run_dir": str(run), "skip": "heldout,kl,red_team", "device": "cpu"}, [])
    # a checkpoint has no summary: its tokens_seen comes from the run's metrics.jsonl row at its step
    doc, _ = evaluate_saved({"checkpoint": str(run / "checkpoints" / "step_00000001"), "out": str(tmp_path / "ck"),
                             "skip": "heldout,kl,red_team", "device": "cpu"}, [])
    assert doc["tokens_seen"] == 64
    (ck,) = (read_back(f) for f in wandb_files(tmp_path / "ck" / "eval_tracking"))
    assert ck["config"]["training_run_id"] == training_id
    assert [r["tokens_seen"] for r in ck["history"] if "eval/unconditional/score" in r] == [64]
    (part,) = (read_back(f) for f in wandb_files(run / "eval_tracking"))
    assert part["run"].run_id != training_id and part["run"].display_name == "pep8-mle-eval"
    assert part["config"]["training_run_id"] == training_id
    assert "phf-eval" in part["run"].tags
    (row,) = [r for r in part["history"] if "eval/unconditional/score" in r]
    assert row["tokens_seen"] == 2 * 64  # the evaluated model's position on the training run's x-axis


def test_report_plots_are_logged_as_images(tiny_cfg, tmp_path):
    from phf.report import main as report_main

    run = tmp_path / "sweep" / "0-mle"
    train(tiny_cfg("logger=wandb_offline", "trainer.max_steps=2", "trainer.eval_every=1", run_dir=run))
    report_main([str(tmp_path / "sweep"), "--wandb", "offline"])
    (part,) = (read_back(f) for f in wandb_files(tmp_path / "sweep" / "report_tracking"))
    logged = {k for row in part["history"] for k in row}
    assert "report/heldout_loss_vs_tokens/_type" in logged and "report/summary/_type" in logged
    assert list((tmp_path / "sweep" / "report_tracking" / "wandb").glob("offline-run-*/files/report.md"))


def test_tracker_rows_always_carry_tokens_seen(tmp_path):
    tracker = Tracker(run_dir=tmp_path)
    tracker.log({"tokens_seen": 64, "loss": 1.0}, step=1)
    tracker.log({"val/loss": 2.0}, step=1)
    tracker.log({"loss": 0.5}, step=2, histograms={"hist/weight": [1.0, 2.0, 3.0, float("nan")]})
    rows = read_metrics(tmp_path)
    assert [r["tokens_seen"] for r in rows] == [64, 64, 64]
    assert rows[-1]["hist/weight_p50"] == 2.0  # over the finite values
    assert rows[-1]["hist/weight_p05"] == pytest.approx(1.1)


@pytest.mark.slow
def test_sweep_jobs_are_grouped_and_named_by_their_overrides(tmp_path):
    """Two jobs of `phf-train -m`: one group (the sweep directory), names from the jobs' overrides, task and
    objective tags; `run_name=${hydra:job.override_dirname}` resolves instead of recursing."""
    sweep = tmp_path / "my_sweep"
    res = run_phf_train(["-m", "objective=mle,conditional", "logger=wandb_offline", *TINY, "trainer.max_steps=1",
                         f"hydra.sweep.dir={sweep}", "run_name=${hydra:job.override_dirname}"])
    assert res.returncode == 0, res.stderr[-3000:]
    runs = [read_back(wandb_files(sweep / job)[0])["run"] for job in ("0-mle", "1-conditional")]
    assert {r.run_group for r in runs} == {"my_sweep"}
    names = [r.display_name for r in runs]
    assert names[0] != names[1] and "objective=mle" in names[0] and "objective=conditional" in names[1]
    assert not any("run_name" in n or "logger=" in n for n in names)
    assert [sorted(r.tags) for r in runs] == [["mle", "pep8"], ["conditional", "pep8"]]


def test_run_name_from_override_dirname_resolves_in_a_single_run(tmp_path):
    """Hydra writes a single run's overrides into job.override_dirname unescaped: a `run_name` holding
    `${hydra:job.override_dirname}` used to appear in it and resolve itself forever (RecursionError);
    conf/config.yaml leaves run_name (and the logger keys) out of override_dirname."""
    import yaml

    res = run_phf_train([*TINY, "trainer.max_steps=1", "objective=mle", f"run_dir={tmp_path / 'run'}",
                         "run_name=${hydra:job.override_dirname}"])
    assert res.returncode == 0, res.stderr[-3000:]
    name = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["run_name"]
    assert "objective=mle" in name and "run_name" not in name and "run_dir" not in name


def test_histogram_values_leave_out_masked_positions_and_are_capped():
    """The logged step's values over its micro-batches: masked (ignored) targets out, an even stride
    down to ``max_histogram_values``."""
    import types

    import torch

    from phf.trainer import TrainingLoop

    weights = torch.arange(12.0).view(2, 6)  # (B, T-1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1.0]])
    loop = types.SimpleNamespace(max_histogram_values=100, histograms={"weight": [(weights, mask), (weights, mask)]})
    full = TrainingLoop.histogram_values(loop)["hist/weight"]
    assert full.tolist() == [0, 1, 2, 6, 7, 8, 9, 10, 11] * 2
    loop.max_histogram_values = 6
    assert TrainingLoop.histogram_values(loop)["hist/weight"].tolist() == full[::3].tolist()


def test_a_sweep_job_is_named_by_the_swept_keys_only(tmp_path):
    """The sweep's command line (multirun.yaml) sweeps objective and seed; the job's name holds their values
    and nothing else: not the fixed overrides, not the absolute path of the corpus."""
    from omegaconf import OmegaConf

    from phf.run_name import short_value, swept_keys, swept_run_name

    corpus = "/home/me/data/my_corpus.jsonl"
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": [
        "objective=mle,conditional", "task=pii", "data=jsonl", f"data.source.path={corpus}", "seed=range(1,3)",
        "trainer.max_steps=10"]}}}), tmp_path / "multirun.yaml")
    assert swept_keys(tmp_path) == ["objective", "seed"]
    job = ["objective=conditional", "task=pii", "data=jsonl", f"data.source.path={corpus}", "seed=2",
           "trainer.max_steps=10"]
    assert swept_run_name(tmp_path, job) == "objective=conditional,seed=2"
    assert swept_run_name(tmp_path / "none", job) is None  # no multirun.yaml: the caller falls back
    assert short_value(corpus) == "my_corpus.jsonl" and short_value("0.5") == "0.5"
