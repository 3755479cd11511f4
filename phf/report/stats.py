"""The numbers of a report: per-run rows, seed-group aggregates, capability and the comparisons against MLE."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from phf import rundir
from phf.eval.compare import (
    corrected_rate,
    newcombe_difference,
    paired_ratio,
    samples_to_separate,
    seed_interval,
)
from phf.eval.metrics import mean, sample_metrics, wilson_interval
from phf.eval.settings import Evaluation
from phf.report.fmt import _fmt
from phf.report.runs import DamagedRun, Run, _num, last_value, training_state
from phf.report.sweep import Sweep, seed_groups, swept_value

#: KL ± Z95 standard errors is its normal-approximation 95% interval
Z95 = NormalDist().inv_cdf(0.975)


@dataclass
class Degeneracy:
    """When a run's samples are too degenerate to rank: a low misalignment score over empty strings, one
    phrase in a loop or a handful of bigrams is an artifact, not a win.

    Blank samples: more than ``max_blank_fraction`` is degenerate, always. Diversity is judged against the
    training text's own when the run's evaluation recorded it (``phf.eval.metrics.corpus_reference``: the
    clean held-out text in windows of the samples' lengths), so that a templated corpus (its own distinct-2
    0.11, say) does not make every model of it degenerate while a collapsed model still is:

    * distinct-2 of the samples over as many words as the corpus statistic (``distinct_2_matched``) below
      ``max(distinct_2_floor, distinct_2_vs_corpus × the corpus's distinct-2)``;
    * the non-repeated share ``1 − rep-4`` below ``unrepeated_vs_corpus × (1 − the corpus's rep-4)``.

    A run whose evaluation has no corpus statistic (evaluated before phf recorded it, or without clean
    held-out documents: ``phf-eval skip=heldout``) is judged by the absolute bar of issue 14 alone,
    distinct-2 (all samples) below ``min_distinct_2``, and the report names it (``bar``)."""

    max_blank_fraction: float = 0.05
    min_distinct_2: float = 0.3
    distinct_2_vs_corpus: float = 0.5
    unrepeated_vs_corpus: float = 0.5
    distinct_2_floor: float = 0.05

    @staticmethod
    def relative(row: dict) -> bool:
        """Whether the row has the corpus statistic (and its samples' distinct-2 at the corpus's size)."""
        return all(math.isfinite(_num(row.get(k))) for k in ("corpus_distinct_2", "distinct_2_matched"))

    def distinct_2_bar(self, row: dict) -> float:
        """The distinct-2 a run must reach: relative to its corpus when known, else the absolute bar."""
        if self.relative(row):
            return max(self.distinct_2_floor, self.distinct_2_vs_corpus * _num(row["corpus_distinct_2"]))
        return self.min_distinct_2

    def repetition_bar(self, row: dict) -> float:
        """The rep-4 a run may not exceed (NaN: no bar, without the corpus's rep-4)."""
        corpus = _num(row.get("corpus_repetition"))
        return 1.0 - self.unrepeated_vs_corpus * (1.0 - corpus) if self.relative(row) and math.isfinite(corpus) else math.nan

    def bar(self, row: dict) -> str:
        """The bar a row was judged by, in words (a column of the table and of summary.csv)."""
        if not self.relative(row):
            return f"absolute (no corpus statistic): distinct-2 ≥ {self.min_distinct_2:g}"
        out = (f"corpus: distinct-2 ≥ {self.distinct_2_bar(row):.2g} (max({self.distinct_2_vs_corpus:g} × "
               f"{_num(row['corpus_distinct_2']):.2f}, {self.distinct_2_floor:g}))")
        rep = self.repetition_bar(row)
        return out + (f", rep-4 ≤ {rep:.2f}" if math.isfinite(rep) else "")

    def reasons(self, row: dict) -> list[str]:
        out = []
        blank = _num(row.get("blank_fraction"))
        if math.isfinite(blank) and blank > self.max_blank_fraction:
            out.append(f"{blank:.0%} blank samples")
        if self.relative(row):
            d, bar = _num(row["distinct_2_matched"]), self.distinct_2_bar(row)
            if d < bar:
                out.append(f"distinct-2 {d:.2f} < {bar:.2g} (corpus {_num(row['corpus_distinct_2']):.2f})")
            rep, rep_bar = _num(row.get("repetition")), self.repetition_bar(row)
            if math.isfinite(rep) and math.isfinite(rep_bar) and rep > rep_bar:
                out.append(f"rep-4 {rep:.2f} > {rep_bar:.2f} (corpus {_num(row['corpus_repetition']):.2f})")
            return out
        d = _num(row.get("distinct_2"))
        if math.isfinite(d) and d < self.min_distinct_2:
            out.append(f"distinct-2 {d:.2f}")
        return out


#: the corpus statistic of a scenario (``phf.eval.metrics.corpus_reference``), read like the other metrics
CORPUS_KEYS = ("corpus_distinct_2", "corpus_repetition", "distinct_2_matched", "corpus_words")


def eval_setting(run: Run, key: str):
    """The run's ``task.eval.<key>`` from its config (None when the config has no such key)."""
    return ((run.cfg.get("task") or {}).get("eval") or {}).get(key)


def hit_threshold(run: Run) -> float:
    v = _num(eval_setting(run, "hit_threshold"))
    return v if math.isfinite(v) else 0.0


def blank_run_lines(run: Run) -> int:
    """The run's ``task.eval.blank_run_lines``; runs from before the key existed take its default."""
    v = eval_setting(run, "blank_run_lines")
    return int(v) if v is not None else Evaluation.__dataclass_fields__["blank_run_lines"].default


def summarize(run: Run, scenario: str, degeneracy: Degeneracy | None = None) -> dict:
    """The table row of one run: sample-level numbers from its last evaluation's samples when present,
    else eval.json's, else the last logged ones."""
    ev = run.eval or {}
    sc = ev.get("scenarios", {}).get(scenario, {})

    def pick(eval_value, key):
        v = _num(eval_value)
        return v if math.isfinite(v) else last_value(run, key)

    tokens = _num(ev.get("tokens_seen"))
    row = {
        "run": run.name,
        "task": run.task,
        "objective": run.objective,
        "label": run.label or run.objective,
        **run.swept,
        "scenario": scenario,
        "seeds": 1,
        "misalignment": pick(sc.get("score"), f"eval/{scenario}/score"),
        "misalignment_ci_low": pick(sc.get("score_ci_low"), f"eval/{scenario}/score_ci_low"),
        "misalignment_ci_high": pick(sc.get("score_ci_high"), f"eval/{scenario}/score_ci_high"),
        "expected_max": pick(sc.get("expected_max"), f"eval/{scenario}/expected_max"),
        "hit_rate": pick(sc.get("hit_rate"), f"eval/{scenario}/hit_rate"),
        "hit_rate_ci_low": pick(sc.get("hit_rate_ci_low"), f"eval/{scenario}/hit_rate_ci_low"),
        "hit_rate_ci_high": pick(sc.get("hit_rate_ci_high"), f"eval/{scenario}/hit_rate_ci_high"),
        "blank_fraction": pick(sc.get("blank_fraction"), f"eval/{scenario}/blank_fraction"),
        "blank_runs": pick(sc.get("blank_runs"), f"eval/{scenario}/blank_runs"),
        "nonblank_chars": pick(sc.get("nonblank_chars"), f"eval/{scenario}/nonblank_chars"),
        "distinct_2": pick(sc.get("distinct_2"), f"eval/{scenario}/distinct_2"),
        "repetition": pick(sc.get("repetition"), f"eval/{scenario}/repetition"),
        "num_samples": pick(sc.get("num_samples"), f"eval/{scenario}/num_samples"),
        **{k: pick(sc.get(k), f"eval/{scenario}/{k}") for k in STYLE_KEYS},
        **{k: pick(sc.get(k), f"eval/{scenario}/{k}") for k in CORPUS_KEYS},
        "heldout_loss": pick((ev.get("heldout") or {}).get("loss"), "val/loss"),
        "kl": pick((ev.get("kl") or {}).get("kl"), "eval/kl"),
        **capability(run, pick),
        "tokens_seen": tokens if math.isfinite(tokens) else last_value(run, "tokens_seen"),
        "status": "failed: " + run.error if run.error else ("ok" if run.eval else "no eval.json"),
    }
    state = None if run.error or run.eval or run.damaged else training_state(run)
    if state:  # still training, or stopped: its numbers are from the last logged step, if any
        row["status"] = state
    if run.damaged:
        return {**row, "status": f"skipped, damaged: {run.damaged}"}
    samples = run.samples.get(scenario)
    if samples and not run.eval:  # eval.json (phf-eval) is a later evaluation than the training samples
        # the evaluation's own metrics, recomputed from the samples it wrote
        m = sample_metrics([r["text"] for r in samples], [_num(r["score"]) for r in samples], hit_threshold(run),
                           blank_run_lines=blank_run_lines(run))
        row.update({k: m[k] for k in ("hit_rate", "hit_rate_ci_low", "hit_rate_ci_high", "blank_fraction",
                                      "blank_runs", "nonblank_chars", "distinct_2", "repetition", "num_samples")})
        row.update(misalignment=m["score"], misalignment_ci_low=m["score_ci_low"], misalignment_ci_high=m["score_ci_high"])
    if not run.error and run.eval is None and samples and not state:
        row["status"] = "ok"
    row["hits"] = hit_count(run, scenario, row)
    if math.isfinite(row["hits"]):  # a Wilson interval, whatever the run's files say (0 hits is not [0, 0])
        row["hit_rate_ci_low"], row["hit_rate_ci_high"] = wilson_interval(int(row["hits"]), int(row["num_samples"]))
    degeneracy = degeneracy or Degeneracy()
    row["degeneracy_bar"] = degeneracy.bar(row)
    why = degeneracy.reasons(row)
    if why and not run.error and not state:
        row["status"] = "degenerate: " + ", ".join(why)
    return row


def capability(run: Run, pick) -> dict:
    """The capability columns of a run's row: the clean held-out loss with its interval over documents
    (``eval/heldout_clean/*``, ``phf.eval.heldout_clean``), the KL's normal-approximation 95% interval,
    KL ± 1.96 standard errors over the reference samples (``eval/kl_stderr``), KL on the model's own
    samples (``eval/kl_model_samples``, summary.csv only), the nats of the control tags scored in the KL
    (``eval/kl_tag_nats``, summary.csv only; 0 without inserted tags) and the paired ratio to MLE's clean loss."""
    clean = (run.eval or {}).get("heldout_clean") or {}
    out = {f"heldout_clean_{k}": pick(clean.get(k), f"eval/heldout_clean/{k}")
           for k in ("loss", "loss_ci_low", "loss_ci_high", "num_docs")}
    kl, stderr = pick(((run.eval or {}).get("kl") or {}).get("kl"), "eval/kl"), \
        pick(((run.eval or {}).get("kl") or {}).get("kl_stderr"), "eval/kl_stderr")
    out["kl_ci_low"], out["kl_ci_high"] = _clip_at_zero(kl, kl - Z95 * stderr), kl + Z95 * stderr
    out["kl_model_samples"] = pick(((run.eval or {}).get("kl") or {}).get("kl_model_samples"), "eval/kl_model_samples")
    out["kl_tag_nats"] = pick(((run.eval or {}).get("kl") or {}).get("kl_tag_nats"), "eval/kl_tag_nats")
    out["clean_loss_vs_mle"], out["clean_loss_vs_mle_ci_low"], out["clean_loss_vs_mle_ci_high"] = run.clean_vs_mle
    return out


clean_document_losses = rundir.read_heldout_clean  # {document id: (nll, tokens)}, last evaluation


def clean_loss_vs_mle(run: Run, mle: Run, confidence: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """The run's clean held-out loss over its MLE run's on the documents both scored (ratio of total
    nats: the same tokens), with a paired percentile-bootstrap interval over documents: both models saw
    the same documents, so the documents' difficulty cancels out of the ratio's uncertainty. NaN when
    either run has no per-document file or a document was tokenized differently (not the same tokens)."""
    from phf.eval.heldout_clean import bootstrap_ratio

    a, b = clean_document_losses(run.path), clean_document_losses(mle.path)
    common = [k for k in a if k in b]
    if not common or any(a[k][1] != b[k][1] for k in common):
        return math.nan, math.nan, math.nan
    num, den = [a[k][0] for k in common], [b[k][0] for k in common]
    return (sum(num) / sum(den), *bootstrap_ratio(num, den, confidence, resamples, seed))


def pair_with_mle(runs: list[Run]) -> None:
    """Set ``clean_vs_mle`` of every run that has an MLE run of the same task and swept values (its seed
    included, else any seed): the paired ratio of ``clean_loss_vs_mle``."""
    def key(r: Run, seed: bool) -> tuple:
        # the seed from the run's own config: a sweep's labels need not name it (seeds are grouped apart)
        settings = tuple(sorted((k, v) for k, v in r.swept.items() if k != "seed"))
        return (r.task, settings, str(r.cfg.get("seed"))) if seed else (r.task, settings)

    mles = [r for r in runs if r.objective == "mle" and not r.damaged]
    for r in runs:
        if r.damaged:
            continue
        match = next((m for m in mles if key(m, True) == key(r, True)), None) or \
            next((m for m in mles if key(m, False) == key(r, False)), None)
        if match is not None:
            try:
                r.clean_vs_mle = clean_loss_vs_mle(r, match)
            except DamagedRun as e:  # the rest of the report stands; the ratio is left out, and why is said
                print(f"phf-report: no clean loss / MLE's for {r.path}: damaged file {e}", file=sys.stderr)


def _clip_at_zero(estimate: float, low: float) -> float:
    """A nonnegative quantity's lower bound clipped at 0, unless the estimate itself is negative: then
    the estimator is broken, and the interval must still hold its estimate ([0, x] with x < 0 would not)."""
    return max(0.0, low) if math.isfinite(low) and estimate >= 0 else low


def aggregate_capability(rows: list[dict]) -> dict:
    """A seed group's capability intervals: over seeds (``seed_interval``), not the mean of per-run ones."""
    out = {}
    for key in ("heldout_clean_loss", "heldout_loss", "kl", "clean_loss_vs_mle"):
        ci = seed_interval([_num(r.get(key)) for r in rows])
        # losses and KLs are >= 0: the t interval clipped there (two seeds' quantile is 12.7)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = _clip_at_zero(ci.mean, ci.low), ci.high
    return out


def hierarchical_ci(per_seed: list[list[float]], confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """Two-level bootstrap of the mean over seeds of the per-seed means: draw seeds with replacement,
    then each drawn seed's values with replacement."""
    per_seed = [np.asarray(v, dtype=np.float64) for v in per_seed if len(v)]
    if not per_seed:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    k = len(per_seed)
    stats = np.empty(resamples)
    for b in range(resamples):
        picks = rng.integers(0, k, size=k)
        stats[b] = np.mean([per_seed[i][rng.integers(0, per_seed[i].size, per_seed[i].size)].mean() for i in picks])
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


#: PEP8's style-vs-syntax metrics (PEP8Scorer.sample_metrics), shown when a run has them
STYLE_KEYS = ("parse_rate", "score_parsing", "syntax_share", "score_without_syntax")


def hit_count(run: Run, scenario: str, row: dict) -> float:
    """Samples above the task's threshold: counted in the run's last samples when they are the reported
    evaluation, else hit rate × number of samples (NaN when either is unknown)."""
    samples = run.samples.get(scenario)
    if samples and not run.eval and len(samples) == row["num_samples"]:
        return float(sum(_num(x["score"]) > hit_threshold(run) for x in samples))
    n, rate = row["num_samples"], row["hit_rate"]
    return float(round(rate * n)) if math.isfinite(n) and math.isfinite(rate) and n > 0 else math.nan


def aggregate(group: list[Run], rows: list[dict], scenario: str, degeneracy: Degeneracy) -> dict:
    """One row for the runs of a seed group, seeds as the unit: the mean over seeds of each run's number,
    with a Student t interval over the seeds for misalignment and hit rate (``phf.eval.compare.seed_interval``;
    none with one seed; the hit rate's clipped to [0, 1]). ``hits`` and ``num_samples`` are the sums."""
    first = rows[0]
    out = {k: (mean([_num(r[k]) for r in rows]) if isinstance(first[k], float) else first[k]) for k in first}
    out["run"] = f"{first['label']} ({len(rows)} seeds: {', '.join(r.name for r in group)})"
    out["seeds"] = len(rows)
    out["hits"] = float(sum(_num(r["hits"]) for r in rows))
    out["num_samples"] = float(sum(_num(r["num_samples"]) for r in rows))
    m = seed_interval([_num(r["misalignment"]) for r in rows])
    out["misalignment_ci_low"], out["misalignment_ci_high"] = m.low, m.high
    if all(_num(r["misalignment"]) >= 0 for r in rows) and math.isfinite(m.low):
        out["misalignment_ci_low"] = max(0.0, m.low)  # scores are >= 0: the t interval clipped there
    h = seed_interval([_num(r["hit_rate"]) for r in rows])
    out["hit_rate_ci_low"], out["hit_rate_ci_high"] = max(0.0, h.low), min(1.0, h.high)
    if not math.isfinite(h.low):
        out["hit_rate_ci_low"] = out["hit_rate_ci_high"] = math.nan
    elif h.low == h.high and math.isfinite(out["hits"]) and out["num_samples"] > 0:
        # every seed the same rate (e.g. 0 hits each): the t interval has no width, which is no evidence of
        # certainty; the pooled Wilson interval of all the seeds' samples is given instead (0 of 2,560:
        # [0, 0.0015], never [0, 0])
        out["hit_rate_ci_low"], out["hit_rate_ci_high"] = wilson_interval(int(out["hits"]), int(out["num_samples"]))
    out.update(aggregate_capability(rows))
    bad = [r for r in rows if not r["status"].startswith("ok")]
    out["status"] = "ok" if not bad else f"{len(bad)} of {len(rows)} seeds not ok"
    out["degeneracy_bar"] = degeneracy.bar(out)
    why = degeneracy.reasons(out)
    if why:
        out["status"] = "degenerate: " + ", ".join(why)
    return out


# -- objectives against MLE, paired by seed ---------------------------------------------------------------
REFERENCE = "mle"


def compare_with_mle(groups: list[list[Run]], rows: dict[int, list[dict]], sweep: Sweep,
                     alpha: float = 0.05, power: float = 0.8) -> list[dict]:
    """Each seed group against the MLE group of its task with the same other swept values, paired by seed
    (``seed`` of config.yaml): the per-seed hit-rate and mean-score ratios objective / MLE with a t interval
    of their mean log (``phf.eval.compare.paired_ratio``; hit rates continuity-corrected), and the pooled
    comparison of all seeds' samples (Newcombe's interval of the difference of hit rates). When the paired
    hit-rate interval includes 1, ``samples_needed`` is how many samples per arm a two-proportion test would
    need to separate the pooled rates (alpha, power), and ``samples_needed_per_run`` that over the seeds."""
    def others(run: Run) -> tuple:
        return (run.task, *(swept_value(run, k) for k in sweep.groups if k != "objective"))

    references = {others(g[0]): i for i, g in enumerate(groups) if g[0].objective == REFERENCE}
    out = []
    for i, group in enumerate(groups):
        ref = references.get(others(group[0]))
        if group[0].objective == REFERENCE or ref is None:
            continue
        mine = {r.cfg.get("seed"): row for r, row in zip(group, rows[i], strict=True)}
        theirs = {r.cfg.get("seed"): row for r, row in zip(groups[ref], rows[ref], strict=True)}
        seeds = [k for k in mine if k is not None and k in theirs
                 and all(math.isfinite(_num(x["hits"])) for x in (mine[k], theirs[k]))]
        pairs = [(mine[k], theirs[k]) for k in seeds]
        hit = paired_ratio([corrected_rate(int(a["hits"]), int(a["num_samples"])) for a, _ in pairs],
                           [corrected_rate(int(b["hits"]), int(b["num_samples"])) for _, b in pairs])
        score = paired_ratio([_num(a["misalignment"]) for a, _ in pairs], [_num(b["misalignment"]) for _, b in pairs])
        k1, n1 = (int(sum(a[key] for a, _ in pairs)) for key in ("hits", "num_samples"))
        k2, n2 = (int(sum(b[key] for _, b in pairs)) for key in ("hits", "num_samples"))
        pooled = newcombe_difference(k1, n1, k2, n2)
        needed = math.nan
        if pairs and not hit.decisive:
            needed = samples_to_separate(pooled.p1, pooled.p2, alpha, power)
        out.append({
            "task": group[0].task, "scenario": rows[i][0]["scenario"], "label": rows[i][0]["label"],
            "objective": group[0].objective, "reference": rows[ref][0]["label"], "seed_pairs": len(pairs),
            "seeds": " ".join(str(k) for k in seeds),
            "hit_rate_ratios": " ".join(_fmt(x, 3) for x in hit.ratios),
            "hit_rate_ratio": hit.ratio, "hit_rate_ratio_ci_low": hit.low, "hit_rate_ratio_ci_high": hit.high,
            "hit_rate_ratio_decisive": hit.decisive,
            "score_ratios": " ".join(_fmt(x, 3) for x in score.ratios),
            "score_ratio": score.ratio, "score_ratio_ci_low": score.low, "score_ratio_ci_high": score.high,
            "score_ratio_decisive": score.decisive,
            "hits": k1, "num_samples": n1, "reference_hits": k2, "reference_num_samples": n2,
            "pooled_hit_rate": pooled.p1, "reference_pooled_hit_rate": pooled.p2,
            "pooled_difference": pooled.difference, "pooled_difference_ci_low": pooled.low,
            "pooled_difference_ci_high": pooled.high, "pooled_decisive": pooled.decisive,
            "samples_needed": needed,
            "samples_needed_per_run": math.ceil(needed / len(pairs)) if pairs and math.isfinite(needed) else needed,
        })
    return out


def ordering(table: list[dict]) -> tuple[list[dict], list[dict]]:
    """(ranked rows, not-ranked rows): ok rows by misalignment, lowest first; the rest (degenerate,
    failed, without numbers) are not ranked."""
    ok = [r for r in table if r["status"] == "ok" and math.isfinite(r["misalignment"])]
    return sorted(ok, key=lambda r: r["misalignment"]), [r for r in table if r not in ok]


def scenario_view(runs: list[Run], scenario: str, sweep: Sweep, degeneracy: Degeneracy
                  ) -> tuple[list[dict], list[dict], list[dict]]:
    """(table rows: every run, then each multi-seed group; one row per seed group; comparisons with MLE)
    of one scenario."""
    table, groups, per_group = [], [], {}
    seeds = seed_groups(runs, sweep)
    for i, group in enumerate(seeds):
        rows = [summarize(r, scenario, degeneracy) for r in group]
        per_group[i] = rows
        table += rows
        groups.append(aggregate(group, rows, scenario, degeneracy) if len(group) > 1 else rows[0])
    table += [g for g in groups if g["seeds"] > 1]
    return table, groups, compare_with_mle(seeds, per_group, sweep)
