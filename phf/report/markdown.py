"""report.md: the tables, comparisons, orderings and sample excerpts as Markdown."""

from __future__ import annotations

import math
from pathlib import Path

from phf.eval.lm_eval_harness import report_lines as lm_eval_lines
from phf.report.fmt import _ci, _code, _fmt
from phf.report.plots import FORMATS, PLOT_TITLES
from phf.report.runs import Run, _num
from phf.report.stats import Degeneracy, ordering
from phf.report.sweep import ABSENT, Sweep


def style_lines(table: list[dict]) -> list[str]:
    """Markdown: PEP8's style apart from syntax, for the rows that have it (none: nothing)."""
    rows = [r for r in table if math.isfinite(_num(r.get("parse_rate")))]
    if not rows:
        return []
    lines = ["", "### Style apart from syntax (PEP8)", "",
             "Misalignment is the paper's metric (violations per character, all samples). Parse rate = share of "
             "samples that are valid Python (a sample cut by the token limit counts when all but its cut last line "
             "is); over parsing samples = the same mean over those only; E1/E9 share = share of all violations that "
             "are indentation or syntax errors; without E1/E9 = the mean over all samples without them. The gap "
             "between misalignment and the last column is syntax, not style.", "",
             "| run | objective | seeds | misalignment ↓ | parse rate | over parsing samples ↓ | E1/E9 share "
             "| without E1/E9 ↓ |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['label']} | {r['seeds']} | {_fmt(r['misalignment'])} "
                     f"| {_fmt(r['parse_rate'], 3)} | {_fmt(r['score_parsing'])} | {_fmt(r['syntax_share'], 3)} "
                     f"| {_fmt(r['score_without_syntax'])} |")
    return lines


def verdict(c: dict) -> str:
    """One sentence: what the paired comparison says, the pooled one beside it, and, when the comparison is
    not decided, what would decide it (more samples when even the pooled comparison is open, else seeds)."""
    if c["seed_pairs"] == 0:
        return "no seed paired with MLE"
    direction = "lower" if c["hit_rate_ratio"] < 1 else "higher"
    pooled = (f"pooled: {'different' if c['pooled_decisive'] else 'not different'} "
              f"({_ci(c, 'pooled_difference', 3)})")
    seeds = f"{c['seed_pairs']} seed{'s' if c['seed_pairs'] > 1 else ''}"
    if c["hit_rate_ratio_decisive"]:
        return f"hit rate {direction} than MLE's, paired by seed over {seeds}; {pooled}"
    why = ("one seed pair: no seed-level interval" if c["seed_pairs"] < 2
           else f"the paired interval over {seeds} includes 1")
    need = c["samples_needed"]
    if c["pooled_decisive"]:
        more = "more seeds would tell whether the pooled difference holds across seeds"
    elif not math.isfinite(need):
        more = "the pooled rates are equal"
    else:
        more = (f"separating {_fmt(c['pooled_hit_rate'], 3)} from {_fmt(c['reference_pooled_hit_rate'], 3)} takes "
                f"≈{int(need):,} samples per arm (α 0.05, power 0.8), i.e. {int(c['samples_needed_per_run']):,} "
                f"per run over {seeds}")
    return f"not decided: {why}; {pooled}; {more}"


def comparison_lines(comparisons: list[dict]) -> list[str]:
    """Markdown: the comparisons against MLE of one scenario as a table."""
    if not comparisons:
        return []
    lines = [
        "| task | objective | seed pairs | hit-rate ratio per seed | hit-rate ratio (paired) [95% t] "
        "| mean-score ratio (paired) [95% t] | hits / samples (pooled) vs MLE | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c['task']} | {c['label']} | {c['seed_pairs']} | {c['hit_rate_ratios'] or '–'} "
            f"| {_ci(c, 'hit_rate_ratio')} | {_ci(c, 'score_ratio')} "
            f"| {c['hits']}/{c['num_samples']} vs {c['reference_hits']}/{c['reference_num_samples']} | {verdict(c)} |")
    return lines


def excerpts(runs: list[Run], scenario: str, k: int, chars: int) -> list[str]:
    """Markdown: ``k`` samples per run (the first ones: the evaluation's order, not picked), cut at
    ``chars`` characters, with their scores; whitespace made visible by repr."""
    lines = []
    for r in runs:
        rows = r.samples.get(scenario) or []
        if not rows:
            continue
        lines += ["", f"### {r.label} — `{r.name}` ({len(rows)} samples, first {min(k, len(rows))} shown)", ""]
        for row in rows[:k]:
            text = row["text"]
            cut = text[:chars] + ("…" if len(text) > chars else "")
            prompt = f"prompt {row['prompt']!r} → " if row.get("prompt") else ""
            lines.append(f"- score {_fmt(_num(row['score']), 3)}: {prompt}{_code(repr(cut))}")
    return lines


def markdown(table: list[dict], scenario: str, plots: list[str], sources: list[Path], runs: list[Run],
             degeneracy: Degeneracy, excerpt_k: int = 3, excerpt_chars: int = 300, sweep: Sweep | None = None,
             comparisons: dict[str, list[dict]] | None = None, secondary: dict | None = None,
             names: dict[str, str] | None = None, exported: dict | None = None,
             units: dict[str, str] | None = None) -> str:
    columns = [k for k in (sweep.labels if sweep else []) if k != "objective"]  # swept keys beside the objective
    comparisons, secondary, names = comparisons or {}, secondary or {}, names or {}
    title = names.get(scenario, scenario)
    lines = [
        "# phf report",
        "",
        f"Runs from {', '.join(f'`{s}`' for s in sources)}. Misalignment = mean score of a scenario's samples "
        "(lower is better), with its 95% bootstrap interval over samples; hit rate = fraction of samples above the "
        "task's threshold, with its 95% Wilson interval. A multi-seed row (runs that differ only by `seed`; the "
        "seeds column counts them) is the mean over seeds of each run's number, with a 95% Student t interval "
        "over the seeds: seeds, not samples, are the unit across runs (when every seed has the same hit rate, e.g. "
        "none, that interval has no width and the pooled Wilson interval of all the seeds' samples is given "
        "instead; intervals of scores, losses and KL are clipped at 0). Expected max = expected maximum score over "
        "25 samples; held-out loss in nats/token on raw held-out text; clean held-out loss in "
        "nats/token on the held-out documents before injection, each model scored as it samples (after its "
        "control prefix, control tokens renormalised away), 95% bootstrap interval over documents; clean loss / "
        "MLE's = the same over the MLE run of the same setting and seed, on the same documents and tokens, with a "
        "paired bootstrap interval over documents; "
        "KL(reference ‖ model) in nats/sample, ± 1.96 standard errors (multi-seed rows: Student-t intervals "
        "over seeds for both). Degeneracy: blank = share of empty or whitespace-only samples, blank-line runs = share "
        "of samples holding a run of blank lines (at least `task.eval.blank_run_lines`; shown, not a degeneracy "
        "rule: a model sampled with its control tokens banned writes them where it would put a control token), "
        "text chars = mean non-whitespace characters per sample (what a rate is a rate of), distinct-2 = unique word "
        "bigrams / all, rep-4 = mean share of repeated word 4-grams within a sample. " + degeneracy_rule(degeneracy)
        + " Final values come from each run's `eval.json` (`phf-eval`), else "
        "from its last evaluation's samples, else from `metrics.jsonl`.",
        "",
        *(["Scores are in " + "; ".join(f"{u} ({t})" for t, u in units.items()) + ".", ""] if units else []),
        *([f"Swept ({sweep.source}): {', '.join(f'`{k}`' for k in sweep.labels)}; runs that differ only by `seed` "
           "form one multi-seed row.", ""] if sweep and sweep.labels else []),
        f"## Primary: `{scenario}`" + (f" — {title}" if title != scenario else ""),
        "",
        *table_lines(table, columns),
        *absolute_bar_lines(table),
        *negative_kl_lines(table),
    ]
    lines += style_lines(table)
    lines += against_mle_lines(comparisons.get(scenario, []))
    lines += lm_eval_lines([(r.name, r.eval) for r in runs if not r.damaged])
    ranked, unranked = ordering([r for r in table if r["seeds"] > 1] or table)
    lines += ["", "## Ordering by misalignment" + (f" (`{scenario}`)" if secondary else ""), ""]
    for task in sorted({r["task"] for r in ranked}):
        rows = [r for r in ranked if r["task"] == task]
        lines.append(f"- {task}: " + " < ".join(f"{r['label']} ({_fmt(r['misalignment'], 3)})" for r in rows))
    if unranked:
        lines.append("- not ranked: " + "; ".join(f"{r['run']} ({r['status']})" for r in unranked))
    for name, (rows, _, _) in secondary.items():
        sub = names.get(name, name)
        lines += ["", f"## Secondary: `{name}`" + (f" — {sub}" if sub != name else ""), "",
                  f"Beside the primary `{scenario}` above, not instead of it.", "", *table_lines(rows, columns)]
        lines += against_mle_lines(comparisons.get(name, []))
    for p in plots:
        stem = Path(p).stem
        lines += ["", f"## {PLOT_TITLES.get(p, p)}", "", f"![{PLOT_TITLES.get(p, p)}]({p})", "",
                  " ".join(f"[{ext.upper()}]({stem}.{ext})" for ext in FORMATS) + ". " + FIGURE_NOTES.get(p, "")]
    samples = excerpts(runs, scenario, excerpt_k, excerpt_chars)
    if samples:
        lines += ["", f"## Samples (`{scenario}`): read these before the numbers", *samples]
    if exported and exported["rows"]:
        counts = sorted(set(exported["per_run"].values()))
        lines += ["", f"The first {'–'.join(map(str, [counts[0], counts[-1]][: 1 + (counts[0] != counts[-1])]))} "
                  f"samples of every run and scenario ({exported['rows']} in all, with their scores): "
                  f"[`{exported['path'].name}`]({exported['path'].name}) (gzip'd JSONL)."]
    return "\n".join(lines) + "\n"


def degeneracy_rule(d: Degeneracy) -> str:
    """The degeneracy rule with its settings, in words."""
    return (f"A run with more than {d.max_blank_fraction:.0%} blank samples is degenerate. Diversity is judged "
            "against the training text's own, measured at evaluation time on the clean held-out text cut into "
            "windows of the samples' lengths (`corpus_distinct_2`, `corpus_repetition`): a run is degenerate when "
            "its distinct-2 over as many words is below "
            f"max({d.distinct_2_vs_corpus:g} × the corpus's, {d.distinct_2_floor:g}) or its share of non-repeated "
            f"4-grams (1 − rep-4) is below {d.unrepeated_vs_corpus:g} × the corpus's; a run whose evaluation has "
            f"no corpus statistic is judged by the absolute bar alone (distinct-2 below {d.min_distinct_2:g}), and "
            "is named under the table. Degenerate runs are not ranked (`phf-report --help`: the settings).")


def absolute_bar_lines(table: list[dict]) -> list[str]:
    """Markdown: the runs judged by the absolute bar only (their evaluation has no corpus statistic)."""
    runs = [r for r in table if r["seeds"] == 1]  # a multi-seed row is judged on its seeds' mean statistic
    rows = [r["run"] for r in runs if str(r.get("degeneracy_bar", "")).startswith("absolute")]
    if not rows:
        return []
    return ["", f"Judged by the absolute degeneracy bar only ({len(rows)} of {len(runs)} runs, and the multi-seed "
            "rows made of them: their evaluation recorded no corpus statistic, because it predates it or ran "
            "without clean held-out documents, e.g. `phf-eval skip=heldout`): " + ", ".join(rows) + "."]


def negative_kl_lines(table: list[dict]) -> list[str]:
    """Markdown: runs whose KL(reference ‖ model) interval lies below 0. The KL of a normalised model is never
    negative, so such an estimate says the model's log-probabilities of the reference texts are not those of
    a distribution over the same texts (e.g. context it was given for free): it is no capability measure."""
    runs = [r["run"] for r in table if r["seeds"] == 1 and _num(r.get("kl_ci_high")) < 0]
    if not runs:
        return []
    return ["", f"**KL below zero** ({len(runs)} run(s), interval entirely negative): a KL cannot be negative, so "
            "for these runs the estimate is not a capability measure and the clean held-out loss is the one to "
            "read (e.g. a model scored in another tokenization than the reference, or given context for free: "
            "phf's PEP8 KL before 2026-12-03, see docs/evaluation.md): " + ", ".join(runs) + "."]


#: what each figure shows, under it in report.md
FIGURE_NOTES = {
    "pareto.png": "One point per seed group (its mean over seeds) or single run; error bars are 95% intervals on "
                  "both axes where the run has one (t over seeds for a group; a single run: Wilson for the hit "
                  "rate, bootstrap over samples for the mean score and over documents for the clean held-out "
                  "loss, ± 1.96 standard errors for KL; the raw held-out loss of a single run has none). Hollow: "
                  "not ranked (degenerate or failed); dashed: the Pareto front of the ranked points. The axes "
                  "show every point and interval except those of 2-seed groups, whose t interval (one degree of "
                  "freedom, quantile 12.7) may run off the plot: read those in the table.",
    "misalignment_vs_tokens.png": "Every evaluation of every run: the trainer's (`task.eval.every_steps`) and "
                                  "phf-eval's on checkpoints (`checkpoints/step_N/eval.json`) and on the final "
                                  "model. Lines: the mean over seeds with its 95% t band; a single run: its own "
                                  "95% interval over samples. One point per run means one evaluation per run.",
    "heldout_loss_vs_tokens.png": "`val/loss` (held-out blocks, every `trainer.eval_every` steps), "
                                  "`eval/heldout/loss` (the same blocks at each evaluation, control tokens "
                                  "excluded as targets) and `eval/heldout_clean/loss` (clean documents, each "
                                  "model in its sampling format, with its 95% interval over documents); bands "
                                  "as in the curves above.",
}


def table_lines(table: list[dict], columns: list[str]) -> list[str]:
    """Markdown: the table of runs and multi-seed rows of one scenario."""
    lines = [
        "| run | task | objective | " + "".join(f"{k} | " for k in columns) + "seeds | misalignment ↓ [95% CI] "
        "| hit rate ↓ [95% CI] | expected max ↓ | held-out loss ↓ | clean held-out loss ↓ [95% CI] "
        "| clean loss / MLE's [95% CI] | KL ↓ [95% CI] | blank | blank-line runs | text chars | distinct-2 | rep-4 "
        "| vs corpus: distinct-2, rep-4 | tokens | status |",
        "|---|---|---|" + "---|" * len(columns) + "---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['run']} | {r['task']} | {r['objective']} | " + "".join(f"{r.get(k, ABSENT)} | " for k in columns)
            + f"{r['seeds']} | {_ci(r, 'misalignment', 4)} "
            f"| {_ci(r, 'hit_rate')} | {_fmt(r['expected_max'])} | {_fmt(r['heldout_loss'])} "
            f"| {_ci(r, 'heldout_clean_loss', 4)} | {_ci(r, 'clean_loss_vs_mle', 4)} | {_ci(r, 'kl')} "
            f"| {_fmt(r['blank_fraction'], 2)} | {_fmt(_num(r.get('blank_runs')), 2)} "
            f"| {_fmt(_num(r.get('nonblank_chars')), 3)} | {_fmt(r['distinct_2'], 2)} | {_fmt(r['repetition'], 2)} "
            f"| {vs_corpus(r)} | {_fmt(r['tokens_seen'], 3)} | {r['status']} |"
        )
    return lines


def vs_corpus(r: dict) -> str:
    """The table cell: the samples' distinct-2 at the corpus sample's size and rep-4 against the held-out
    text's own ("0.41 / 0.62, 0.01 / 0.00"), or that the run was judged by the absolute bar."""
    if not Degeneracy.relative(r):
        return "– (absolute bar)" if r.get("degeneracy_bar") else "–"
    return (f"{_fmt(_num(r['distinct_2_matched']), 2)} / {_fmt(_num(r['corpus_distinct_2']), 2)}, "
            f"{_fmt(r['repetition'], 2)} / {_fmt(_num(r.get('corpus_repetition')), 2)}")


def against_mle_lines(comparisons: list[dict]) -> list[str]:
    """Markdown: the paired comparisons with MLE of one scenario, with how they were made."""
    if not comparisons:
        return []
    return ["", "### Against MLE, paired by seed", "",
            "Ratio objective / MLE per seed pair (same seed: same data order), and the geometric-mean ratio with a 95% "
            "Student t interval of the mean log ratio over the pairs (hit rates as (hits + 0.5) / (n + 1)); the "
            "pooled comparison puts all seeds' samples of an arm together (Newcombe's 95% interval of the "
            "difference of hit rates; it ignores seed-to-seed variation). A comparison is decided when the paired "
            "interval excludes 1.", "", *comparison_lines(comparisons)]
