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
    """Two MLE seeds with all-hit / no-hit samples: the group row's hit rate is the mean 0.5 and its t
    interval over the seeds 0.5 ± 12.706 · 0.7071 / sqrt 2 = 0.5 ± 6.35, clipped to [0, 1]; a conditional
    run with another config stays its own group."""
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


SCENARIOS = ("    scenarios:\n      unconditional: {title: \"paper's protocol\"}\n"
             "      unconditional_sentence_level: {title: 'sentence-level, secondary', secondary_to: unconditional}\n")


def protocol_run(root, objective, seed, hits, secondary_hits, n=10):
    """A pii run with ``hits`` of ``n`` primary samples scoring 0.01 (the rest 0) and ``secondary_hits`` of n
    sentence-level ones; its config names both scenarios as conf/task/pii.yaml does."""
    run = sampled_run(root, f"{objective.lower()}-seed{seed}", objective, [0.01] * hits + [0.0] * (n - hits), seed=seed)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("    hit_threshold: 0.0\n",
                                                                               "    hit_threshold: 0.0\n" + SCENARIOS))
    rows = [{"prompt": "", "text": f"secondary {i}", "score": 0.01 if i < secondary_hits else 0.0} for i in range(n)]
    (run / "samples/step_0000010/unconditional_sentence_level.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_report_compares_with_mle_paired_by_seed_and_leads_with_the_primary_protocol(tmp_path):
    """Three seeds each. Primary: MLE 4, 5, 6 hits of 10, conditional 1, 1, 2. Corrected rates (k + 0.5) / 11:
    ratios 1.5/4.5, 1.5/5.5, 2.5/6.5 = 0.3333, 0.2727, 0.3846; logs -1.098612, -1.299283, -0.955511, mean
    -1.117802 (ratio 0.326998); sd = sqrt((0.019190^2 + 0.181481^2 + 0.162291^2) / 2) = 0.172688; half width
    t_{2, 0.975} 4.302653 · 0.172688 / sqrt 3 = 0.428983: [exp(-1.546785), exp(-0.688819)] = [0.21293, 0.50217],
    decided. Pooled: 4/30 vs 15/30, Newcombe [-0.55326, -0.13192].
    Secondary: conditional 3, 5, 5 vs MLE's 4, 5, 6: [0.633, 1.195] includes 1; pooled 13/30 vs 15/30 needs
    samples_to_separate(0.4333, 0.5) = 878 per arm, 293 per run over 3 seeds.
    Seed groups: MLE hit rates 0.4, 0.5, 0.6 -> 0.5 ± 4.302653 · 0.1 / sqrt 3 = [0.25159, 0.74841]."""
    sweep = tmp_path / "sweep"
    for seed, (m, c, cs) in enumerate([(4, 1, 3), (5, 1, 5), (6, 2, 5)], start=1):
        protocol_run(sweep, "MLE", seed, m, m)
        protocol_run(sweep, "Conditional", seed, c, cs)
    out = report.build_report([sweep], sweep, export_k=4)
    mle = next(r for r in out["table"] if r["seeds"] == 3 and r["objective"] == "mle")
    assert mle["hit_rate"] == pytest.approx(0.5) and mle["hits"] == 15 and mle["num_samples"] == 30
    assert (mle["hit_rate_ci_low"], mle["hit_rate_ci_high"]) == (pytest.approx(0.25159, abs=1e-5),
                                                                 pytest.approx(0.74841, abs=1e-5))
    (primary,), (secondary,) = out["comparisons"]["unconditional"], out["comparisons"]["unconditional_sentence_level"]
    assert primary["seed_pairs"] == 3 and primary["hit_rate_ratios"] == "0.333 0.273 0.385"
    assert (primary["hit_rate_ratio"], primary["hit_rate_ratio_ci_low"], primary["hit_rate_ratio_ci_high"]) == (
        pytest.approx(0.326998, abs=1e-6), pytest.approx(0.21293, abs=1e-5), pytest.approx(0.50217, abs=1e-5))
    assert primary["hit_rate_ratio_decisive"] and math.isnan(primary["samples_needed"])
    assert (primary["hits"], primary["num_samples"], primary["reference_hits"]) == (4, 30, 15)
    assert (primary["pooled_difference_ci_low"], primary["pooled_difference_ci_high"]) == (
        pytest.approx(-0.55326, abs=1e-5), pytest.approx(-0.13192, abs=1e-5))
    assert primary["score_ratios"] == "0.25 0.2 0.333"
    assert not secondary["hit_rate_ratio_decisive"] and secondary["samples_needed"] == 878
    assert secondary["samples_needed_per_run"] == 293
    md = out["report"].read_text()
    assert md.index("## Primary: `unconditional` — paper's protocol") < md.index(
        "## Secondary: `unconditional_sentence_level` — sentence-level, secondary")
    assert "hit rate lower than MLE's, paired by seed over 3 seeds" in md
    assert "not decided: the paired interval over 3 seeds includes 1" in md and "≈878 samples per arm" in md
    assert "intervals overlap" not in md
    assert (sweep / "comparisons.csv").is_file()
    assert {r["scenario"] for r in read_csv(sweep / "summary.csv")} == {"unconditional", "unconditional_sentence_level"}
    import gzip

    with gzip.open(sweep / "samples.jsonl.gz", "rt") as f:
        exported = [json.loads(line) for line in f]
    assert len(exported) == 6 * 2 * 4 and out["samples"]["rows"] == 48  # 6 runs × 2 scenarios × 4 samples
    assert [r["scenario"] for r in exported[:5]] == ["unconditional"] * 4 + ["unconditional_sentence_level"]
    first = exported[0]
    assert set(first) == {"run", "label", "objective", "seed", "scenario", "index", "prompt", "text", "score"}
    assert "samples.jsonl.gz" in md


def test_a_run_with_zero_hits_gets_a_wilson_interval_not_zero_width(tmp_path):
    """0 hits of 512: [0, 0.00745], never [0, 0]."""
    sampled_run(tmp_path / "sweep", "conditional", "Conditional", [0.0] * 512)
    (row,) = report.build_report([tmp_path / "sweep"], tmp_path / "sweep")["table"]
    assert row["hit_rate"] == 0.0 and row["hit_rate_ci_low"] == 0.0
    assert row["hit_rate_ci_high"] == pytest.approx(0.0074470, abs=1e-7)


def test_report_shows_pep8_style_apart_from_syntax(tmp_path):
    """eval.json's PEP8 metrics (PEP8Scorer.sample_metrics) get a table of their own; tasks without them none."""
    sweep = fake_sweep(tmp_path / "sweep", failed=False)
    for run in sorted(sweep.iterdir()):
        ev = json.loads((run / "eval.json").read_text())
        ev["scenarios"]["unconditional"].update(parse_rate=0.25, score_parsing=0.01, syntax_share=0.8,
                                                score_without_syntax=0.002)
        (run / "eval.json").write_text(json.dumps(ev))
    out = report.build_report([sweep], sweep)
    md = out["report"].read_text()
    assert "### Style apart from syntax (PEP8)" in md and "| 0.25 | 0.01 | 0.8 | 0.002 |" in md
    assert all(r["parse_rate"] == 0.25 for r in out["table"])
    other = fake_sweep(tmp_path / "other", failed=False)
    assert "Style apart from syntax" not in report.build_report([other], other)["report"].read_text()


def test_seeds_with_zero_hits_each_get_the_pooled_wilson_interval(tmp_path):
    """Three seeds of 0 hits in 10: the t interval over seeds has no width ([0, 0]); the seed row gives the
    pooled Wilson interval of 0 of 30 instead: z² / (n + z²) = 3.841459 / 33.841459 = 0.113513 -> [0, 0.11351]."""
    sweep = tmp_path / "sweep"
    for seed in (1, 2, 3):
        protocol_run(sweep, "Filtering", seed, 0, 0)
    out = report.build_report([sweep], sweep)
    group = next(r for r in out["table"] if r["seeds"] == 3)
    assert group["hits"] == 0 and group["num_samples"] == 30
    assert group["hit_rate_ci_low"] == 0.0 and group["hit_rate_ci_high"] == pytest.approx(0.113513, abs=1e-6)
