"""phf-report's capability columns: clean held-out loss with its interval, KL with ± 1.96 standard errors,
seed-level intervals, and the Pareto plot's capability axis."""

import json
import math

import pytest

from phf import report

from .test_report import FINAL, fake_sweep, read_csv


def add_clean_loss(root):
    """eval.json of every fake run gains heldout_clean: loss = held-out loss - 0.5, interval ± 0.05."""
    for i, (obj, (_, loss, _)) in enumerate(FINAL.items()):
        path = root / f"{i}-{obj}" / "eval.json"
        ev = json.loads(path.read_text())
        ev["heldout_clean"] = {"loss": loss - 0.5, "loss_ci_low": loss - 0.55, "loss_ci_high": loss - 0.45,
                               "ppl": math.exp(loss - 0.5), "num_tokens": 1000.0, "num_docs": 12.0}
        path.write_text(json.dumps(ev))


def test_clean_loss_and_kl_intervals_reach_the_table_csv_and_plot(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep", failed=False)
    add_clean_loss(sweep)
    out = report.build_report([sweep], tmp_path / "out")
    rows = {r["objective"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert float(rows["mle"]["heldout_clean_loss"]) == pytest.approx(1.60)
    assert float(rows["mle"]["heldout_clean_loss_ci_low"]) == pytest.approx(1.55)
    assert float(rows["mle"]["heldout_clean_num_docs"]) == 12
    # KL 30 with standard error 1.0: 30 ± 1.96
    assert float(rows["mle"]["kl_ci_low"]) == pytest.approx(30 - 1.959964, abs=1e-5)
    assert float(rows["mle"]["kl_ci_high"]) == pytest.approx(30 + 1.959964, abs=1e-5)
    md = out["report"].read_text()
    assert "clean held-out loss ↓ [95% CI]" in md and "| 1.6 [1.55, 1.65] |" in md
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000


def test_clean_loss_falls_back_to_the_last_logged_value(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep", with_eval=False, failed=False)
    metrics = sweep / "0-mle" / "metrics.jsonl"
    row = {"step": 20, "tokens_seen": 81920, "eval/heldout_clean/loss": 1.7, "eval/heldout_clean/loss_ci_low": 1.6,
           "eval/heldout_clean/loss_ci_high": 1.8, "eval/heldout_clean/num_docs": 9}
    metrics.write_text(metrics.read_text().rsplit("\n", 1)[0] + "\n" + json.dumps(row) + "\n")
    rows = {r["objective"]: r for r in read_csv(report.build_report([sweep], tmp_path / "o")["report"].parent
                                                / "summary.csv")}
    assert float(rows["mle"]["heldout_clean_loss"]) == pytest.approx(1.7)
    assert math.isnan(float(rows["filtering"]["heldout_clean_loss"]))


def test_pareto_axis_is_the_clean_loss_when_any_run_has_it():
    nan = math.nan
    with_clean = [{"heldout_clean_loss": 1.6, "heldout_loss": 2.1}, {"heldout_clean_loss": nan, "heldout_loss": 2.2}]
    assert report.pareto_measures(with_clean)[0][0] == "heldout_clean_loss"
    assert report.pareto_measures([{"heldout_clean_loss": nan, "heldout_loss": 2.1}])[0][0] == "heldout_loss"
    assert report.x_error({"kl": 3.0, "kl_ci_low": 2.5, "kl_ci_high": 4.0}, "kl") == [[0.5], [1.0]]
    assert report.x_error({"kl": 3.0, "kl_ci_low": nan, "kl_ci_high": 4.0}, "kl") is None


def test_capability_intervals_are_over_seeds_by_hand():
    """Clean losses of seeds (1, 2, 3): mean 2, sd 1, se 1/sqrt(3); t_{0.975, 2} = 4.302653: 2 ± 2.484138, the
    low end clipped at 0 (a loss is >= 0); a KL with one finite seed has no interval
    (phf.eval.compare.seed_interval)."""
    rows = [{"heldout_clean_loss": x, "kl": k, "clean_loss_vs_mle": 1.0} for x, k in ((1.0, 1.0), (2.0, math.nan), (3.0, math.nan))]
    out = report.aggregate_capability(rows)
    assert out["heldout_clean_loss_ci_low"] == 0.0
    assert out["heldout_clean_loss_ci_high"] == pytest.approx(2 + 2.484138, abs=1e-6)
    assert math.isnan(out["kl_ci_low"]) and math.isnan(out["kl_ci_high"])


def write_documents(run_dir, rows):
    (run_dir / "heldout_clean").mkdir(exist_ok=True)
    (run_dir / "heldout_clean" / "step_0000020.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_clean_loss_over_mle_is_paired_over_the_same_documents(tmp_path):
    """MLE: documents (nll 10, 20, 30 nats; 5, 10, 15 tokens); filtering: (11, 22, 33): ratio 66/60 = 1.1
    on every resample (each document's ratio is 1.1), so the paired interval is [1.1, 1.1]; conditional's
    third document has other tokens: not the same token set, no ratio."""
    sweep = fake_sweep(tmp_path / "sweep", failed=False)
    docs = [("a", 5), ("b", 10), ("c", 15)]
    write_documents(sweep / "0-mle", [{"id": i, "nll": 2.0 * n, "tokens": n} for i, n in docs])
    write_documents(sweep / "1-filtering", [{"id": i, "nll": 2.2 * n, "tokens": n} for i, n in docs])
    write_documents(sweep / "2-conditional", [{"id": i, "nll": 2.0 * n, "tokens": n + (i == "c")} for i, n in docs])
    report.build_report([sweep], tmp_path / "out")
    rows = {r["objective"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert float(rows["filtering"]["clean_loss_vs_mle"]) == pytest.approx(1.1)
    assert float(rows["filtering"]["clean_loss_vs_mle_ci_low"]) == pytest.approx(1.1)
    assert float(rows["filtering"]["clean_loss_vs_mle_ci_high"]) == pytest.approx(1.1)
    assert float(rows["mle"]["clean_loss_vs_mle"]) == pytest.approx(1.0)
    assert math.isnan(float(rows["conditional"]["clean_loss_vs_mle"]))
    assert math.isnan(float(rows["rwr"]["clean_loss_vs_mle"]))  # no per-document file
    assert "| 1.1 [1.1, 1.1] |" in (tmp_path / "out" / "report.md").read_text()


def test_a_damaged_document_file_names_the_line(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    write_documents(run, [{"id": "a", "nll": 1.0, "tokens": 1}])
    (run / "heldout_clean" / "step_0000020.jsonl").write_text('{"id": "a", "nll": 1.0, "tokens": 1}\n{"id": "b"}\n')
    with pytest.raises(report.DamagedRun, match=r"step_0000020.jsonl:2"):
        report.clean_document_losses(run)


def test_a_damaged_document_file_leaves_the_ratio_out_and_says_why(tmp_path, capsys):
    sweep = fake_sweep(tmp_path / "sweep", failed=False)
    write_documents(sweep / "0-mle", [{"id": "a", "nll": 1.0, "tokens": 1}])
    (sweep / "1-filtering" / "heldout_clean").mkdir()
    (sweep / "1-filtering" / "heldout_clean" / "eval.jsonl").write_text("not json\n")
    report.build_report([sweep], tmp_path / "out")
    rows = {r["objective"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert math.isnan(float(rows["filtering"]["clean_loss_vs_mle"]))
    assert "eval.jsonl:1" in capsys.readouterr().err


def test_clean_loss_over_mle_pairs_each_seed_with_its_own_mle_seed(tmp_path):
    """A seeded sweep (overrides objective=..., seed=...): MLE seed 1 scores 2 nats/token, MLE seed 2 scores 3;
    conditional seed k scores 1.1 × its own MLE seed's. Paired with its own seed every conditional ratio is
    1.1 and every MLE ratio 1 (pairing everything with seed 1's MLE would give conditional seed 2 3.3/2 = 1.65
    and MLE seed 2 1.5)."""
    sweep = tmp_path / "sweep"
    docs = [("a", 5), ("b", 10)]
    per_token = {("mle", 1): 2.0, ("mle", 2): 3.0, ("conditional", 1): 2.2, ("conditional", 2): 3.3}
    for (obj, seed), nll in per_token.items():
        run = sweep / f"{obj}-seed{seed}"
        (run / ".hydra").mkdir(parents=True)
        target = {"mle": "MLE", "conditional": "Conditional"}[obj]
        (run / "config.yaml").write_text(f"seed: {seed}\ntask:\n  name: pii\nobjective:\n  _target_: phf.objectives.{target}\n")
        (run / ".hydra" / "overrides.yaml").write_text(f"- objective={obj}\n- seed={seed}\n")
        (run / "eval.json").write_text(json.dumps({"task": "pii", "objective": obj, "tokens_seen": 100,
                                                   "scenarios": {"unconditional": {"score": 0.1, "hit_rate": 0.5}}}))
        write_documents(run, [{"id": i, "nll": nll * n, "tokens": n} for i, n in docs])
    report.build_report([sweep], tmp_path / "out")
    ratios = {r["run"]: float(r["clean_loss_vs_mle"]) for r in read_csv(tmp_path / "out" / "summary.csv")
              if r["seeds"] == "1"}
    assert ratios == pytest.approx({"mle-seed1": 1.0, "mle-seed2": 1.0, "conditional-seed1": 1.1,
                                    "conditional-seed2": 1.1})


def test_a_negative_kl_is_named_as_no_capability_measure():
    """KL's interval [-25, -19] lies below 0: named under the table; [−1, 3] and NaN are not."""
    from phf.report.markdown import negative_kl_lines

    table = [{"run": "a", "seeds": 1, "kl_ci_high": -19.0}, {"run": "b", "seeds": 1, "kl_ci_high": 3.0},
             {"run": "c", "seeds": 1, "kl_ci_high": float("nan")}, {"run": "g", "seeds": 5, "kl_ci_high": -1.0}]
    lines = negative_kl_lines(table)
    assert "**KL below zero** (1 run(s)" in lines[1] and lines[1].endswith(": a.")
    assert negative_kl_lines(table[1:3]) == []


def test_a_kl_interval_holds_its_estimate_even_below_zero():
    """KL -22 with standard error 5: [-22 - 9.8, -22 + 9.8], not [0, -12.2] (the clip at 0 applies only to a
    nonnegative estimate: 3 ± 9.8 -> [0, 12.8]); over seeds -22, -21, -23 the t interval stays below 0 too."""
    from phf.report.stats import _clip_at_zero, aggregate_capability

    assert _clip_at_zero(-22.0, -22.0 - 1.959964 * 5) == pytest.approx(-31.79982)
    assert _clip_at_zero(3.0, 3.0 - 1.959964 * 5) == 0.0
    out = aggregate_capability([{"kl": k, "heldout_clean_loss": 1.0, "clean_loss_vs_mle": 1.0} for k in (-22, -21, -23)])
    # mean -22, sd 1, t_{2, 0.975} = 4.3027: half width 2.4841
    assert out["kl_ci_low"] == pytest.approx(-24.4841, abs=1e-4) and out["kl_ci_high"] == pytest.approx(-19.5159, abs=1e-4)
