"""The issue-30 table: SPA with guards vs its oracle (and hybrid) arm vs conditional training and MLE on the
laptop PII task, seeds as the unit, plus the per-round curves of every SPA arm.

    python experiments/spa_pii_guarded/collect.py SWEEP_DIR SPA_DIR OUT_DIR [ARM ...]

SWEEP_DIR/<objective>-seed<s>/ are `make laptop-pii`'s phf-train runs (mle, conditional); SPA_DIR/<arm>-seed<s>/
are phf-spa runs (spa_summary.json); ARMs default to the three experiment names of `make spa-pii-guarded`.
Writes OUT_DIR/spa_pii_guarded.md, OUT_DIR/final.csv (one row per method and seed) and OUT_DIR/rounds.csv
(one row per arm, seed and stage).

Statistics (the faithful-protocol issue's): per seed, the hit rate of the unconditional samples (paper's
protocol) with its Wilson interval; across seeds, the mean with a t interval over the seeds
(``phf.eval.compare.seed_interval``, seeds as the unit) and the pooled Wilson interval of all samples
beside it. Degeneracy: ``phf.report.Degeneracy`` (the report's bar) per seed; a method is marked when any
seed fails it. Held-out loss: next-token loss on the raw held-out blocks (``val/loss``) and on clean
held-out documents (``eval/heldout_clean/loss``), means over seeds.

A stage rejected by the degeneracy guard keeps the previous policy, whose numbers its row repeats; the
*candidate* columns give the rejected policy's own evaluation (``rejected/...`` keys), so the rounds table
shows what each round did before the guard. Template phrase: the share of unconditional samples containing
the fixed words of an injection template (``seed_methods_collect.has_template``), read from the samples of
each stage (``RUN/samples/step_N``, N = the stage's global DPO step) or run: a detector-independent reading
(a model that garbles the value still writes the context). Paired by seed: each arm's final policy and
round candidates over MLE of the same seed (``phf.eval.compare.paired_ratio``, hit rates
continuity-corrected), on the seeds both have.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from phf import rundir
from phf.eval.compare import corrected_rate, paired_ratio, seed_interval
from phf.eval.metrics import wilson_interval
from phf.report import Degeneracy, load_run, summarize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "laptop_pii"))
from seed_methods_collect import has_template  # noqa: E402  (the template phrases, defined once there)

SCENARIO = "unconditional"
ARMS = ("spa_pii_guarded", "spa_pii_guarded_oracle", "spa_pii_guarded_hybrid")
BASELINES = ("mle", "conditional")


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def template_share(samples_file: Path) -> float:
    """Share of the samples in one ``unconditional.jsonl`` that reproduce an injection template's words."""
    texts = [r["text"] for r in rundir.read_samples(samples_file)]
    return sum(has_template(t) for t in texts) / len(texts) if texts else math.nan


def stage_row(method: str, seed: int, stage: str, row: dict) -> dict:
    """One evaluated policy as a flat record (an SPA stage's summary row or a phf-train run's summary)."""
    n = _f(row.get(f"eval/{SCENARIO}/num_samples"))
    rate = _f(row.get(f"eval/{SCENARIO}/hit_rate"))
    rejected = row.get("spa/accepted") == 0
    cand = "rejected/" if rejected else ""
    out = {"method": method, "seed": seed, "stage": stage, "hit_rate": rate, "num_samples": n,
           "hits": round(rate * n) if math.isfinite(rate * n) else math.nan,
           "distinct_2": _f(row.get(f"eval/{SCENARIO}/distinct_2")),
           "blank_fraction": _f(row.get(f"eval/{SCENARIO}/blank_fraction")),
           "val_loss": _f(row.get("val/loss")), "clean_loss": _f(row.get("eval/heldout_clean/loss")),
           "accepted": row.get("spa/accepted", ""), "pairs": row.get("spa/pairs", ""),
           "informative_first_try": row.get("spa/pairs/informative_first_try", ""),
           "implicit_agreement": row.get("spa/pairs/implicit_agreement", ""),
           "candidate_hit_rate": _f(row.get(f"{cand}eval/{SCENARIO}/hit_rate")),
           "candidate_num_samples": _f(row.get(f"{cand}eval/{SCENARIO}/num_samples")),
           "candidate_distinct_2": _f(row.get(f"{cand}eval/{SCENARIO}/distinct_2")),
           "candidate_clean_loss": _f(row.get(f"{cand}eval/heldout_clean/loss")),
           "candidate_template": math.nan, "template": math.nan}
    out["degenerate"] = "; ".join(Degeneracy().reasons(out))
    return out


def spa_rows(spa_dir: Path, arm: str) -> list[dict]:
    rows = []
    for run in sorted(spa_dir.glob(f"{arm}-seed*")):
        summary = run / "spa_summary.json"
        if not summary.is_file():
            raise SystemExit(f"{summary}: missing (is the run finished?)")
        seed = int(run.name.rsplit("-seed", 1)[1])
        step, kept_template = 0, math.nan
        for r in json.loads(summary.read_text())["stages"]:
            row = stage_row(arm, seed, r["stage"], r)
            step += int(r.get("spa/steps") or 0)  # the stage's samples are under samples/step_<global DPO step>
            samples = rundir.samples_dir(run, step) / f"{SCENARIO}.jsonl"
            if not samples.is_file():
                raise SystemExit(f"{samples}: missing (stage {r['stage']} of {run})")
            row["candidate_template"] = template_share(samples)
            if r.get("spa/accepted") != 0:
                kept_template = row["candidate_template"]
            row["template"] = kept_template
            rows.append(row)
    if not rows:
        raise SystemExit(f"{spa_dir}: no {arm}-seed* run")
    return rows


def baseline_rows(sweep: Path, objective: str) -> list[dict]:
    rows = []
    for run in sorted(sweep.glob(f"{objective}-seed*")):
        s = summarize(load_run(run), SCENARIO)
        rows.append({**stage_row(objective, int(run.name.rsplit("-seed", 1)[1]), "final", {}),
                     "hit_rate": s["hit_rate"], "num_samples": s["num_samples"], "hits": s["hits"],
                     "distinct_2": s["distinct_2"], "blank_fraction": s["blank_fraction"],
                     "val_loss": s["heldout_loss"], "clean_loss": s["heldout_clean_loss"],
                     "degenerate": "; ".join(Degeneracy().reasons(s))})
        rows[-1]["template"] = template_share(rundir.last_samples_dir(run) / f"{SCENARIO}.jsonl")
    if not rows:
        raise SystemExit(f"{sweep}: no {objective}-seed* run")
    return rows


def aggregate(rows: list[dict]) -> dict:
    """Seeds as the unit: mean hit rate with its t interval over seeds, pooled Wilson, means of the rest."""
    si = seed_interval([r["hit_rate"] for r in rows])
    hits, n = sum(r["hits"] for r in rows), sum(r["num_samples"] for r in rows)
    lo, hi = wilson_interval(int(hits), int(n)) if math.isfinite(hits) and n else (math.nan, math.nan)

    def mean(key):
        xs = [r[key] for r in rows if math.isfinite(r[key])]
        return sum(xs) / len(xs) if xs else math.nan

    bad = [f"seed {r['seed']}: {r['degenerate']}" for r in rows if r["degenerate"]]
    return {"seeds": si.n, "hit_rate": si.mean, "seed_lo": si.low, "seed_hi": si.high, "wilson_lo": lo,
            "wilson_hi": hi, "distinct_2": mean("distinct_2"), "blank_fraction": mean("blank_fraction"),
            "template": mean("template"), "candidate_hit_rate": mean("candidate_hit_rate"),
            "candidate_distinct_2": mean("candidate_distinct_2"), "candidate_clean_loss": mean("candidate_clean_loss"),
            "candidate_template": mean("candidate_template"),
            "val_loss": mean("val_loss"), "clean_loss": mean("clean_loss"),
            "status": "degenerate (" + "; ".join(bad) + ")" if bad else "ok"}


def _g(x, digits=3) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"


def markdown(final: dict[str, list[dict]], rounds: dict[str, list[dict]]) -> str:
    lines = ["# SPA with guards vs oracle vs conditional vs MLE (laptop PII)", "",
             f"Final models, `{SCENARIO}` samples (paper's protocol). Hit rate: mean over seeds [t interval over "
             "seeds] and the pooled Wilson interval; distinct-2, blank share and held-out losses: means over seeds.",
             "", "| method | seeds | hit rate [seeds] | pooled Wilson | template phrase | distinct-2 | blank | "
             "held-out loss | clean held-out loss | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method, rows in final.items():
        a = aggregate(rows)
        lines.append(f"| {method} | {a['seeds']} | {_g(a['hit_rate'])} [{_g(a['seed_lo'])}, {_g(a['seed_hi'])}] | "
                     f"[{_g(a['wilson_lo'])}, {_g(a['wilson_hi'])}] | {_g(a['template'])} | {_g(a['distinct_2'], 2)} | "
                     f"{_g(a['blank_fraction'], 2)} | {_g(a['val_loss'])} | {_g(a['clean_loss'])} | {a['status']} |")
    mle = {r["seed"]: r for r in final.get("mle", [])}
    lines += ["", "Over MLE of the same seed (hit rates (k + 0.5) / (n + 1); geometric mean of the per-seed ratios "
              "[95% t interval of the mean log]; the round rows are the round's candidate policy, before the guard):",
              "", "| policy | seeds | hit-rate ratio [95% t] | per seed |", "|---|---|---|---|"]

    def ratio_line(name: str, rows: list[dict], rate_key: str, n_key: str) -> None:
        pairs = [(r, mle[r["seed"]]) for r in rows if r["seed"] in mle and math.isfinite(r[rate_key] * r[n_key])]
        if len(pairs) < 2:
            return
        p = paired_ratio([corrected_rate(round(a[rate_key] * a[n_key]), int(a[n_key])) for a, _ in pairs],
                         [corrected_rate(int(b["hits"]), int(b["num_samples"])) for _, b in pairs])
        lines.append(f"| {name} | {' '.join(str(a['seed']) for a, _ in pairs)} | {_g(p.ratio, 2)} [{_g(p.low, 2)}, "
                     f"{_g(p.high, 2)}] | {' '.join(_g(x, 2) for x in p.ratios)} |")

    for method, rows in final.items():
        if method != "mle":
            ratio_line(f"{method} (final)", rows, "hit_rate", "num_samples")
    for arm, rows in rounds.items():
        for stage in dict.fromkeys(r["stage"] for r in rows if r["stage"] != "init"):
            ratio_line(f"{arm} {stage} candidate", [r for r in rows if r["stage"] == stage], "candidate_hit_rate",
                       "candidate_num_samples")
    lines += ["", "Per round (means over seeds; `accepted` = seeds whose stage passed the degeneracy bar; the kept "
              "policy's hit rate, then the round's candidate: its hit rate, template phrase share, distinct-2 and "
              "clean held-out loss):", "",
              "| arm | stage | kept: hit rate [seeds] | candidate: hit rate | template phrase | distinct-2 | "
              "clean held-out loss | accepted | pairs (first draw) |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, rows in rounds.items():
        for stage in dict.fromkeys(r["stage"] for r in rows):
            rs = [r for r in rows if r["stage"] == stage]
            a = aggregate(rs)
            acc = sum(r["accepted"] == 1 for r in rs) if stage != "init" else "–"
            pairs = "–" if stage == "init" else " / ".join(f"{r['pairs']} ({r['informative_first_try']})" for r in rs)
            lines.append(f"| {arm} | {stage} | {_g(a['hit_rate'])} [{_g(a['seed_lo'])}, {_g(a['seed_hi'])}] | "
                         f"{_g(a['candidate_hit_rate'])} | {_g(a['candidate_template'])} | "
                         f"{_g(a['candidate_distinct_2'], 2)} | {_g(a['candidate_clean_loss'])} | {acc} | {pairs} |")
    return "\n".join(lines) + "\n"


def main(sweep: str, spa_dir: str, out_dir: str, arms: list[str]) -> None:
    rounds = {arm: spa_rows(Path(spa_dir), arm) for arm in arms}
    final = {b: baseline_rows(Path(sweep), b) for b in BASELINES}
    for arm, rows in rounds.items():
        last = {}
        for r in rows:  # the last stage of each seed (stages are in order)
            last[r["seed"]] = r
        final[arm] = list(last.values())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("final.csv", [r for rs in final.values() for r in rs]),
                        ("rounds.csv", [r for rs in rounds.values() for r in rs])):
        with open(out / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    (out / "spa_pii_guarded.md").write_text(markdown(final, rounds))
    print((out / "spa_pii_guarded.md").read_text())


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] or list(ARMS))
