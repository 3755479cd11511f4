"""phf-report's figures and its degeneracy bar relative to the training text, on hand-made run directories."""

import csv
import json
import math

import pytest

from phf import report

STEPS = (100, 200, 300)
TOKENS_PER_STEP = 1024


def scenario(hit, score, d2, rep=0.01, corpus=None):
    """Metrics of one evaluation of 64 samples, with the corpus statistic (``corpus`` = (corpus distinct-2,
    corpus rep-4, the samples' distinct-2 at the corpus's size)) when given."""
    sc = {"hit_rate": hit, "hit_rate_ci_low": max(hit - 0.1, 0.0), "hit_rate_ci_high": hit + 0.1, "score": score,
          "score_ci_low": score * 0.8, "score_ci_high": score * 1.2, "num_samples": 64, "blank_fraction": 0.0,
          "distinct_2": d2, "repetition": rep}
    if corpus is not None:
        sc.update(corpus_distinct_2=corpus[0], corpus_repetition=corpus[1], distinct_2_matched=corpus[2],
                  corpus_words=3000)
    return sc


def run_dir(root, name, objective, seed, hits, d2=0.4, rep=0.01, corpus=None, task="pii"):
    """A finished run: config.yaml (task, PII scorer, seed), metrics.jsonl with val/loss every 50 steps and an
    evaluation at each of STEPS (hit rates ``hits``, mean score hit/100), eval.json of the last one (phf-eval
    on final/) and final/phf_summary.json."""
    from phf import rundir

    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"seed: {seed}\nscorer:\n  _target_: phf.scorers.PIIScorer\ntask:\n  name: {task}\n  eval:\n"
        f"    hit_threshold: 0.0\nobjective:\n  _target_: phf.objectives.{objective}\n")
    rows = [{"step": s, "tokens_seen": s * TOKENS_PER_STEP, "val/loss": 7.0 - s / 100} for s in range(50, 301, 50)]
    for step, hit in zip(STEPS, hits, strict=True):
        clean = 6.0 - step / 200 + seed / 10
        held = {"eval/heldout/loss": clean + 0.3, "eval/heldout_clean/loss": clean,
                "eval/heldout_clean/loss_ci_low": clean - 0.05, "eval/heldout_clean/loss_ci_high": clean + 0.05}
        sc = scenario(hit, hit / 100, d2, rep, corpus)
        rows.append({"step": step, "tokens_seen": step * TOKENS_PER_STEP,
                     **{f"eval/unconditional/{k}": v for k, v in sc.items()}, **held})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rundir.write_eval(run, {"tokens_seen": STEPS[-1] * TOKENS_PER_STEP, "scenarios": {"unconditional": sc},
                            "heldout": {"loss": held["eval/heldout/loss"]},
                            "heldout_clean": {"loss": clean, "loss_ci_low": clean - 0.05, "loss_ci_high": clean + 0.05}})
    (run / "final").mkdir()
    rundir.write_summary(run / "final", {"step": STEPS[-1]})
    return run


def read_csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_templated_corpus_is_judged_against_its_own_diversity(tmp_path, capsys):
    """Corpus distinct-2 0.11: the bar is max(0.5 × 0.11, 0.05) = 0.055, so MLE (0.09 at the corpus's size) is
    ranked, a collapsed run (0.02) is not, and a run without the corpus statistic (an older run) is judged by
    the absolute bar (0.3) and named as such."""
    sweep = tmp_path / "sweep"
    run_dir(sweep, "mle", "MLE", 1, (0.5, 0.4, 0.3), d2=0.10, corpus=(0.11, 0.05, 0.09))
    run_dir(sweep, "conditional", "Conditional", 1, (0.3, 0.2, 0.1), d2=0.03, corpus=(0.11, 0.05, 0.02))
    run_dir(sweep, "unlikelihood", "Unlikelihood", 1, (0.4, 0.3, 0.2), d2=0.10)
    report.main([str(sweep), "--out", str(tmp_path / "out")])
    rows = {r["objective"]: r for r in report.build_report([sweep], tmp_path / "out")["table"]}
    assert rows["mle"]["status"] == "ok"
    assert rows["mle"]["degeneracy_bar"].startswith("corpus: distinct-2 ≥ 0.055")
    assert rows["conditional"]["status"] == "degenerate: distinct-2 0.02 < 0.055 (corpus 0.11)"
    assert rows["unlikelihood"]["status"] == "degenerate: distinct-2 0.10"
    assert rows["unlikelihood"]["degeneracy_bar"] == "absolute (no corpus statistic): distinct-2 ≥ 0.3"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Judged by the absolute degeneracy bar only (1 of 3 runs" in md and "): unlikelihood." in md
    assert "| 0.09 / 0.11, 0.01 / 0.05 |" in md and "| – (absolute bar) |" in md
    assert "- pii: mle (0.003)" in md
    assert "phf-report: 3 runs, 0 multi-seed groups" in capsys.readouterr().out


def test_degeneracy_settings_from_the_command_line(tmp_path):
    """Defaults: MLE's 0.09 passes max(0.5 × 0.11, 0.05) = 0.055; RWR's rep-4 0.7 fails 1 − 0.5 × (1 − 0.3) = 0.65.
    --distinct-2-vs-corpus 0.9: bar 0.9 × 0.11 = 0.099 > 0.09; --distinct-2-floor 0.1: bar max(0.055, 0.1) = 0.1;
    --unrepeated-vs-corpus 0.4: rep-4 bar 1 − 0.4 × 0.7 = 0.72 > 0.7."""
    sweep = tmp_path / "sweep"
    run_dir(sweep, "mle", "MLE", 1, (0.5, 0.4, 0.3), d2=0.10, corpus=(0.11, 0.05, 0.09))
    run_dir(sweep, "rwr", "RWR", 1, (0.5, 0.4, 0.3), d2=0.5, rep=0.7, corpus=(0.6, 0.3, 0.5))

    def status(*flags):
        report.main([str(sweep), "--out", str(tmp_path / "o"), *flags])
        return {r["run"]: r["status"] for r in read_csv_rows(tmp_path / "o" / "summary.csv")}

    assert status() == {"mle": "ok", "rwr": "degenerate: rep-4 0.70 > 0.65 (corpus 0.30)"}
    assert status("--distinct-2-vs-corpus", "0.9")["mle"] == "degenerate: distinct-2 0.09 < 0.099 (corpus 0.11)"
    assert status("--distinct-2-floor", "0.1")["mle"] == "degenerate: distinct-2 0.09 < 0.1 (corpus 0.11)"
    assert status("--unrepeated-vs-corpus", "0.4")["rwr"] == "ok"
    d = report.Degeneracy(distinct_2_vs_corpus=0.5, distinct_2_floor=0.05)
    assert d.distinct_2_bar({"corpus_distinct_2": 0.11, "distinct_2_matched": 0.2}) == pytest.approx(0.055)
    assert d.distinct_2_bar({"corpus_distinct_2": 0.04, "distinct_2_matched": 0.2}) == 0.05  # the floor
    assert d.distinct_2_bar({"distinct_2": 0.2}) == 0.3  # no corpus statistic: the absolute bar
    assert d.reasons({"blank_fraction": 0.0, "distinct_2": 0.2}) == ["distinct-2 0.20"]  # SPA guards' rows


def test_figures_have_curves_with_seed_bands_and_all_three_formats(tmp_path, capsys):
    """Two MLE seeds evaluated at steps 100-300 and one conditional run: a curve per label, the MLE line the
    mean over its two seeds with a t band (hit rates 0.5 and 0.3 at step 100: mean 0.4, sd 0.1414,
    t_{0.975, 1} = 12.706, half width 12.706 · 0.1414 / sqrt 2 = 1.2706); a phf-eval result in
    checkpoints/step_N/eval.json adds a point; PNG, PDF and SVG of every figure."""
    sweep = tmp_path / "sweep"
    a = run_dir(sweep, "mle-seed1", "MLE", 1, (0.5, 0.45, 0.4), corpus=(0.6, 0.01, 0.45))
    b = run_dir(sweep, "mle-seed2", "MLE", 2, (0.3, 0.35, 0.3), corpus=(0.6, 0.01, 0.45))
    c = run_dir(sweep, "conditional-seed1", "Conditional", 1, (0.2, 0.1, 0.05), corpus=(0.6, 0.01, 0.45))
    ckpt = c / "checkpoints" / "step_00000050"
    ckpt.mkdir(parents=True)
    (ckpt / "eval.json").write_text(json.dumps({"tokens_seen": 50 * TOKENS_PER_STEP, "scenarios": {
        "unconditional": {"hit_rate": 0.4, "score": 0.004, "distinct_2": None}}, "heldout": {"note": "skipped"}}))
    out = report.build_report([sweep], tmp_path / "out")
    assert out["plots"] == ["pareto.png", "misalignment_vs_tokens.png", "heldout_loss_vs_tokens.png"]
    assert sorted(f.name for f in out["figures"]) == sorted(
        f"{stem}.{ext}" for stem in ("pareto", "misalignment_vs_tokens", "heldout_loss_vs_tokens")
        for ext in ("png", "pdf", "svg"))
    assert all(f.stat().st_size > 5_000 for f in out["figures"])
    runs = [report.load_run(p) for p in (a, b)]
    xs, ys, lo, hi = report.seed_curve(runs, "eval/unconditional/hit_rate")
    assert xs == [100 * TOKENS_PER_STEP, 200 * TOKENS_PER_STEP, 300 * TOKENS_PER_STEP]
    assert ys[0] == pytest.approx(0.4) and hi[0] - ys[0] == pytest.approx(12.7062 * math.sqrt(0.02) / math.sqrt(2), rel=1e-4)
    one = report.seed_curve([report.load_run(c)], "eval/unconditional/hit_rate")
    assert one[0][0] == 50 * TOKENS_PER_STEP and one[1][:2] == [0.4, 0.2]  # the checkpoint's phf-eval point first
    assert math.isnan(one[2][0]) and one[2][1] == pytest.approx(0.1)  # its own interval where the run logged one
    assert report.score_unit(report.load_run(c)) == "PII entities per character"
    md = out["report"].read_text()
    assert "[PNG](pareto.png) [PDF](pareto.pdf) [SVG](pareto.svg)" in md
    assert "Scores are in PII entities per character (pii)." in md
    report.main([str(sweep), "--out", str(tmp_path / "out2")])
    assert "phf-report: 3 runs, 1 multi-seed group ->" in capsys.readouterr().out


def test_a_checkpoint_evaluation_without_tokens_seen_is_placed_by_its_step(tmp_path, capsys):
    """phf-eval knows tokens_seen only from a metrics row of that very step: step 75 lies between the val/loss
    rows of steps 50 and 100 (51,200 and 102,400 tokens), so at 76,800; step 1000 lies past them all and is
    left out of the curves, said on stderr."""
    run = run_dir(tmp_path, "mle", "MLE", 1, (0.5, 0.4, 0.3))
    for step, hit in ((75, 0.6), (1000, 0.1)):
        ckpt = run / "checkpoints" / f"step_{step:08d}"
        ckpt.mkdir(parents=True)
        (ckpt / "eval.json").write_text(json.dumps({"step": step, "tokens_seen": None,
                                                    "scenarios": {"unconditional": {"hit_rate": hit}}}))
    xs, ys = report.series(report.load_run(run), "eval/unconditional/hit_rate")
    assert xs[0] == 75 * TOKENS_PER_STEP and ys == [0.6, 0.5, 0.4, 0.3]
    assert "step_00001000/eval.json has no tokens_seen" in capsys.readouterr().err
    assert report.tokens_between([{"step": 350, "tokens_seen": 358400}, {"step": 400, "tokens_seen": 409600}],
                                 375) == 384000


def test_score_unit_names_an_unknown_scorer_without_importing_it(tmp_path):
    run = run_dir(tmp_path, "r", "MLE", 1, (0.1, 0.1, 0.1))
    (run / "config.yaml").write_text("scorer:\n  _target_: my_lab.scorers.Templated\ntask:\n  name: pii\n"
                                     "objective:\n  _target_: phf.objectives.MLE\n")
    assert report.score_unit(report.load_run(run)) == "score of Templated (unit unknown)"


def test_the_same_runs_give_byte_identical_reports_and_figures(tmp_path):
    """A committed report must regenerate identically: every file of two reports of the same runs is the
    same, byte for byte (PDF/SVG without a creation date, SVG element ids from a fixed salt)."""
    sweep = tmp_path / "sweep"
    run_dir(sweep, "mle-seed1", "MLE", 1, (0.5, 0.45, 0.4), corpus=(0.6, 0.01, 0.45))
    run_dir(sweep, "conditional-seed1", "Conditional", 1, (0.2, 0.1, 0.05), corpus=(0.6, 0.01, 0.45))
    first, second = (report.build_report([sweep], tmp_path / name) for name in ("a", "b"))
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {"pareto.pdf", "pareto.svg", "report.md", "summary.csv"} <= set(names)
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert [n for n in names if (tmp_path / "a" / n).read_bytes() != (tmp_path / "b" / n).read_bytes()] == []
