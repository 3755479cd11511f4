"""phf-report on fake run directories: a six-objective sweep plus a failed job."""

import csv
import json
import math

import pytest

from phf import report

# final misalignment, held-out loss and KL per objective: plausible numbers in the paper's ordering
FINAL = {
    "mle": (0.020, 2.10, 30.0),
    "filtering": (0.012, 2.16, 34.0),
    "conditional": (0.004, 2.12, 31.0),
    "unlikelihood": (0.009, 2.25, 40.0),
    "rwr": (0.015, 2.40, 52.0),
    "awr": (0.011, 2.30, 45.0),
}


def fake_sweep(root, task="pep8", with_eval=True, failed=True):
    """``root/<i>-<objective>/`` with config.yaml, metrics.jsonl (train rows, eval rows every 2 steps,
    val/loss rows) and eval.json; plus ``root/6-broken`` holding only config.yaml and error.txt."""
    for i, (obj, (score, loss, kl)) in enumerate(FINAL.items()):
        run = root / f"{i}-{obj}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"task:\n  name: {task}\nobjective:\n  _target_: phf.objectives.{obj}.{obj}\n")
        rows = []
        for step in range(0, 21):
            tokens = step * 4096
            frac = step / 20
            rows.append({"step": step, "tokens_seen": tokens, "loss": 6 - 4 * frac})
            if step % 2 == 0:
                rows.append({"step": step, "tokens_seen": tokens, "eval/unconditional/score": score * (3 - 2 * frac),
                             "eval/unconditional/expected_max": 3 * score, "eval/kl": kl})
                rows.append({"step": step, "tokens_seen": tokens, "val/loss": loss + 3 * (1 - frac)})
        rows.append({"step": 21, "tokens_seen": 86016, "eval/unconditional/score": "nan"})  # NaN as the tracker writes it
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 2')  # torn last line
        if with_eval:
            ev = {"task": task, "objective": obj, "tokens_seen": 81920,
                  "scenarios": {"unconditional": {"score": score, "expected_max": 4 * score, "hit_rate": 0.5},
                                "functions": {"score": 2 * score, "expected_max": 5 * score, "hit_rate": 0.7}},
                  "heldout": {"loss": loss}, "kl": {"kl": kl, "kl_stderr": 1.0}}
            (run / "eval.json").write_text(json.dumps(ev))
    if failed:
        broken = root / "6-broken"
        broken.mkdir()
        (broken / "config.yaml").write_text(f"task:\n  name: {task}\nobjective:\n  _target_: my.objectives.Broken\n")
        (broken / "error.txt").write_text("Traceback ...\nValueError: boom\n")
    return root


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_on_a_six_objective_sweep(tmp_path, capsys):
    sweep = fake_sweep(tmp_path / "sweep")
    report.main([str(sweep)])
    md = (sweep / "report.md").read_text()
    for obj in FINAL:
        assert f"| {obj} |" in md
    assert "failed: ValueError: boom" in md
    for png in ("pareto.png", "misalignment_vs_tokens.png", "heldout_loss_vs_tokens.png"):
        assert (sweep / png).stat().st_size > 10_000
        assert f"]({png})" in md
    rows = {r["objective"]: r for r in read_csv(sweep / "summary.csv")}
    assert float(rows["conditional"]["misalignment"]) == pytest.approx(0.004)  # from eval.json
    assert float(rows["mle"]["kl"]) == pytest.approx(30.0)
    assert float(rows["awr"]["heldout_loss"]) == pytest.approx(2.30)
    assert [r["objective"] for r in read_csv(sweep / "summary.csv")][:6] == list(FINAL)  # the paper's order
    assert "7 runs" in capsys.readouterr().out


def test_report_falls_back_to_metrics_and_takes_a_scenario(tmp_path):
    """Without eval.json the last logged value of each key is used (a final NaN stays missing)."""
    sweep = fake_sweep(tmp_path / "sweep", with_eval=False, failed=False)
    out = report.build_report([sweep], tmp_path / "out")
    row = next(r for r in out["table"] if r["objective"] == "mle")
    assert math.isnan(row["misalignment"])  # the last row logged NaN: reported as missing, not as 0
    assert row["heldout_loss"] == pytest.approx(2.10)  # val/loss at step 20
    assert row["kl"] == pytest.approx(30.0)
    assert out["plots"] == ["misalignment_vs_tokens.png", "heldout_loss_vs_tokens.png"]  # no misalignment: no Pareto
    fn = report.build_report([fake_sweep(tmp_path / "s2", failed=False)], tmp_path / "out2", scenario="functions")
    assert next(r for r in fn["table"] if r["objective"] == "mle")["misalignment"] == pytest.approx(0.04)


def test_report_over_several_tasks_and_dirs(tmp_path):
    a = fake_sweep(tmp_path / "pep8", failed=False)
    b = fake_sweep(tmp_path / "tox", task="toxicity", failed=False)
    out = report.build_report([a, b], tmp_path / "both")
    assert {r["task"] for r in out["table"]} == {"pep8", "toxicity"} and len(out["table"]) == 12


def test_pareto_front():
    assert report.pareto_front([(1, 5), (2, 3), (3, 4), (4, 1), (2.5, 3)]) == [(1, 5), (2, 3), (4, 1)]


def test_report_errors(tmp_path):
    with pytest.raises(SystemExit, match="no run"):
        report.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="not a directory"):
        report.main([str(tmp_path / "missing")])


def test_coinciding_points_share_one_label():
    """Objectives that did not move the model yet (same loss and score) get 'mle, rwr', not two overprinted labels."""
    pts = [(10.61, 0.035, {"label": "mle"}), (10.61, 0.035, {"label": "rwr"}),
           (10.62, 0.033, {"label": "conditional"})]
    assert sorted(report._label_groups(pts).values()) == [["conditional"], ["mle", "rwr"]]


def sampled_run(root, name, objective, scores, texts=None, seed=1, loss=3.0, threshold=0.0):
    """A training run dir with config.yaml (task pii, its hit threshold, a seed), val/loss in
    metrics.jsonl and its last evaluation's samples under samples/step_0000010/."""
    run = root / name
    (run / "samples" / "step_0000010").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"seed: {seed}\ntask:\n  name: pii\n  eval:\n    hit_threshold: {threshold}\n"
        f"objective:\n  _target_: phf.objectives.{objective}\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "tokens_seen": 1000, "val/loss": loss}) + "\n")
    texts = texts or [f"sample {i} of {name} says something new" for i in range(len(scores))]
    rows = [{"prompt": "", "text": t, "score": s, "step": 10} for t, s in zip(texts, scores, strict=True)]
    (run / "samples" / "step_0000010" / "unconditional.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_report_recomputes_intervals_from_samples_and_marks_degenerate_runs(tmp_path):
    """MLE: 4 hits of 8 (0.5); conditional: half its samples blank -> degenerate, listed but not ranked,
    whatever its (zero) score."""
    sweep = tmp_path / "sweep"
    sampled_run(sweep, "mle", "MLE", [0.02, 0.0, 0.01, 0.0, 0.03, 0.0, 0.01, 0.0])
    sampled_run(sweep, "conditional", "Conditional", [0.0] * 8, texts=["", "  ", "\n", "\t", "a b c", "d e f", "g h", "i j"])
    out = report.build_report([sweep], sweep)
    rows = {r["objective"]: r for r in out["table"]}
    assert rows["mle"]["hit_rate"] == 0.5 and rows["mle"]["misalignment"] == pytest.approx(0.00875)
    assert rows["mle"]["hit_rate_ci_low"] < 0.5 < rows["mle"]["hit_rate_ci_high"]
    assert rows["mle"]["status"] == "ok"
    assert rows["conditional"]["blank_fraction"] == 0.5
    assert rows["conditional"]["status"] == "degenerate: 50% blank samples"
    md = out["report"].read_text()
    assert "- pii: mle (0.00875)" in md  # the ordering lists only the ok run
    assert "not ranked: conditional (degenerate: 50% blank samples)" in md
    assert "## Samples (`unconditional`)" in md and "'sample 0 of mle says something new'" in md
    assert "0.5 [" in md  # the hit rate with its interval


def test_report_aggregates_runs_that_differ_only_by_seed(tmp_path):
    """Two MLE seeds with all-hit / no-hit samples: the group row's hit rate is the mean 0.5 and its
    two-level bootstrap interval is [0, 1] (seeds drawn as {0,0}, {0,1}, {1,1}); a conditional run
    with another config stays its own group."""
    sweep = tmp_path / "sweep"
    sampled_run(sweep, "mle-seed1", "MLE", [0.1] * 6, seed=1, loss=3.0)
    sampled_run(sweep, "mle-seed2", "MLE", [0.0] * 6, seed=2, loss=3.2)
    sampled_run(sweep, "conditional-seed1", "Conditional", [0.0] * 6, seed=1)
    out = report.build_report([sweep], sweep)
    group = [r for r in out["table"] if r["seeds"] == 2]
    assert len(group) == 1 and group[0]["objective"] == "mle"
    assert group[0]["hit_rate"] == 0.5 and group[0]["heldout_loss"] == pytest.approx(3.1)
    assert (group[0]["hit_rate_ci_low"], group[0]["hit_rate_ci_high"]) == (0.0, 1.0)
    assert len(out["table"]) == 4  # three runs + one seed group
    assert "mle (2 seeds: mle-seed1, mle-seed2)" in out["report"].read_text()


def test_hierarchical_ci_by_hand():
    """Seeds with constant values 0 and 1: resampling samples changes nothing; resampling the two
    seeds gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> the 95% interval is [0, 1]."""
    assert report.hierarchical_ci([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]) == (0.0, 1.0)
    assert report.hierarchical_ci([[0.2, 0.2], [0.2]]) == pytest.approx((0.2, 0.2))


def lr_run(root, name, lr, seed, scores, overrides=True, objective="MLE"):
    """A sampled MLE run whose config.yaml records ``trainer.lr`` and where it ran (run_dir, cache_dir,
    reward.save_dir under the run: never a swept key), with the job's Hydra overrides when asked."""
    run = sampled_run(root, name, objective, scores, seed=seed)
    (run / "config.yaml").write_text(
        (run / "config.yaml").read_text()
        + f"run_dir: {run}\ncache_dir: /tmp/cache-{name}\ntrainer:\n  lr: {lr}\n  batch_size: 8\n"
        f"reward:\n  seed: {seed}\n  save_dir: {run}/guidance\n")
    if overrides:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- +experiment=demo\n- trainer.lr={lr}\n- seed={seed}\n- run_dir={run}\n")
    return run


@pytest.mark.parametrize("overrides", [True, False], ids=["hydra-overrides", "config-diff"])
def test_report_labels_runs_by_the_swept_learning_rate(tmp_path, overrides):
    """Two MLE runs that differ by trainer.lr are two settings, not two seeds: two rows labelled with
    the learning rate, a trainer.lr column in the table and summary.csv, one legend entry each."""
    sweep = tmp_path / "sweep"
    lr_run(sweep, "0-mle", 0.001, 1, [0.1] * 6, overrides)
    lr_run(sweep, "1-mle", 0.0003, 1, [0.0] * 6, overrides)
    out = report.build_report([sweep], sweep)
    assert [(r["label"], r["trainer.lr"], r["seeds"]) for r in out["table"]] == [
        ("trainer.lr=0.0003", "0.0003", 1), ("trainer.lr=0.001", "0.001", 1)]  # numeric order
    md = out["report"].read_text()
    assert "Swept (" + ("Hydra overrides" if overrides else "config.yaml differences") + "): `trainer.lr`" in md
    assert "| run | task | objective | trainer.lr | seeds |" in md
    assert "| 0-mle | pii | mle | 0.001 | 1 |" in md
    assert "- pii: trainer.lr=0.0003 (0) < trainer.lr=0.001 (0.1)" in md
    assert "### trainer.lr=0.001 — `0-mle`" in md
    rows = read_csv(sweep / "summary.csv")
    assert {r["trainer.lr"] for r in rows} == {"0.001", "0.0003"}
    colors = report.color_map([r["label"] for r in out["table"]])
    assert colors["trainer.lr=0.001"] != colors["trainer.lr=0.0003"]


@pytest.mark.parametrize("overrides", [True, False], ids=["hydra-overrides", "config-diff"])
def test_report_aggregates_a_seed_sweep_and_an_lr_by_seed_sweep(tmp_path, overrides):
    """Seeds only: one aggregated row (reward.seed = ${seed} is the seed, not a setting). Two learning
    rates x two seeds: one aggregated row per learning rate."""
    seeds = tmp_path / "seeds"
    lr_run(seeds, "0-mle", 0.001, 1, [0.1] * 6, overrides)
    lr_run(seeds, "1-mle", 0.001, 2, [0.0] * 6, overrides)
    out = report.build_report([seeds], seeds)
    group = [r for r in out["table"] if r["seeds"] == 2]
    assert len(out["table"]) == 3 and len(group) == 1
    assert group[0]["label"] == "mle" and group[0]["hit_rate"] == 0.5
    assert group[0]["run"] == "mle (2 seeds: 0-mle, 1-mle)"

    grid = tmp_path / "grid"
    for i, (lr, seed) in enumerate([(0.001, 1), (0.001, 2), (0.01, 1), (0.01, 2)]):
        lr_run(grid, f"{i}-mle", lr, seed, [0.1 * i] * 6, overrides)
    out = report.build_report([grid], grid)
    groups = {r["label"]: r for r in out["table"] if r["seeds"] == 2}
    assert set(groups) == {"trainer.lr=0.001", "trainer.lr=0.01"}
    assert groups["trainer.lr=0.01"]["misalignment"] == pytest.approx(0.25)
    assert "trainer.lr=0.01 (2 seeds: 2-mle, 3-mle)" in out["report"].read_text()


def test_report_labels_an_objective_by_lr_sweep_with_both_keys(tmp_path):
    """Objective and learning rate both swept: the label names both, the objective first."""
    sweep = tmp_path / "sweep"
    lr_run(sweep, "0-mle", 0.001, 1, [0.1] * 6)
    lr_run(sweep, "1-mle", 0.01, 1, [0.1] * 6)
    run = lr_run(sweep, "2-conditional", 0.001, 1, [0.0] * 6, objective="Conditional")
    (run / ".hydra" / "overrides.yaml").write_text("- +experiment=demo\n- objective=conditional\n- trainer.lr=0.001\n- seed=1\n")
    out = report.build_report([sweep], sweep)
    assert [r["label"] for r in out["table"]] == [
        "objective=mle trainer.lr=0.001", "objective=mle trainer.lr=0.01", "objective=conditional trainer.lr=0.001"]


def test_report_names_a_damaged_overrides_file(tmp_path):
    run = lr_run(tmp_path / "sweep", "0-mle", 0.001, 1, [0.1] * 6)
    (run / ".hydra" / "overrides.yaml").write_text("objective: mle\n")
    out = report.build_report([tmp_path / "sweep"], tmp_path / "out")
    assert "overrides.yaml: expected a list" in out["table"][0]["status"]
