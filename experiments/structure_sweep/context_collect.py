"""Does prefix conditioning work once a block holds whole documents? (``make structure-context``)

    python experiments/structure_sweep/context_collect.py BASE_DIR CONTEXT_DIR [--out DIR]

BASE_DIR holds ``make laptop-pii``'s runs (``<objective>-seed<s>/``: the demo's corpus, structure point s5,
128-token context); CONTEXT_DIR ``make structure-context``'s (``<objective>-ctx512-seed<s>/``: the same runs
with a 512-token context at the same 1,024 tokens per step). Runs are read with phf-report's loaders
(``phf.report.load_run``, ``summarize``); only seeds present in both folders for both MLE and conditional are
used, so every comparison is paired by seed.

Per context and objective: the hit rate (mean over seeds, t interval over seeds; pooled Wilson interval of all
samples beside it), mean score, clean held-out loss, KL from the clean reference, distinct-2 and blank share.
Per context: conditional / MLE paired by seed (``phf.eval.compare.paired_ratio``: geometric mean of per-seed
ratios, t interval of the mean log; hit rates continuity-corrected). Across contexts: the ratio of those
ratios, paired by seed (does the longer context change conditional's reduction?). Both sampling protocols:
``unconditional`` (the paper's: both control tokens banned; the primary result) and
``unconditional_sentence_level`` (secondary).

Writes DIR/context.csv (one row per context, objective, scenario and seed) and DIR/context.md (the tables);
DIR defaults to CONTEXT_DIR.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from phf.eval.compare import corrected_rate, paired_ratio, seed_interval
from phf.eval.metrics import wilson_interval
from phf.report import Degeneracy, find_runs, load_run, summarize

SCENARIOS = ("unconditional", "unconditional_sentence_level")
OBJECTIVES = ("mle", "conditional")
FIELDS = ("hit_rate", "hits", "num_samples", "misalignment", "heldout_clean_loss", "kl", "distinct_2",
          "blank_fraction")


def load(folder: Path, label: str) -> dict[tuple[str, int], object]:
    """{(objective, seed): Run} of one context's folder; refuses damaged runs and duplicates."""
    out = {}
    for path in find_runs([folder]):
        run = load_run(path)
        if run.damaged:
            raise SystemExit(f"context_collect: {path}: damaged file {run.damaged}")
        if run.objective not in OBJECTIVES:
            continue
        seed = run.cfg.get("seed")
        if not isinstance(seed, int):
            raise SystemExit(f"context_collect: {path / 'config.yaml'}: expected an integer `seed`, got {seed!r}")
        key = (run.objective, seed)
        if key in out:
            raise SystemExit(f"context_collect: two {label} runs of {key[0]} seed {seed}: {out[key].path}, {path}")
        out[key] = run
    return out


def block_size(run) -> int:
    value = (run.cfg.get("model") or {}).get("block_size")
    if not isinstance(value, int):
        raise SystemExit(f"context_collect: {run.path / 'config.yaml'}: expected an integer model.block_size")
    return value


def rows_of(runs: dict, seeds: list[int], context: int) -> list[dict]:
    rows = []
    for objective in OBJECTIVES:
        for seed in seeds:
            run = runs[(objective, seed)]
            for scenario in SCENARIOS:
                s = summarize(run, scenario, Degeneracy())
                rows.append({"context": context, "objective": objective, "scenario": scenario, "seed": seed,
                             "run": str(run.path), **{k: s[k] for k in FIELDS}, "status": s["status"]})
    return rows


def _g(x: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    return f"{_g(mean, digits)} [{_g(low, digits)}, {_g(high, digits)}]"


def _rate(r: dict) -> float:
    return corrected_rate(int(r["hits"]), int(r["num_samples"]))


def tables(rows: list[dict], contexts: list[int], seeds: list[int], scenarios: list[str]) -> str:
    def pick(context, objective, scenario):
        got = {r["seed"]: r for r in rows if (r["context"], r["objective"], r["scenario"]) == (context, objective, scenario)}
        return [got[s] for s in seeds]

    lines = [f"Seeds {', '.join(map(str, seeds))} (paired across objectives and contexts). Hit rate: mean over "
             "seeds [95% t interval over seeds] and the pooled Wilson interval of all samples; the rest are means "
             "over seeds.", "",
             "| scenario | context | objective | hit rate [seeds] | pooled Wilson | mean score [seeds] | "
             "clean held-out loss | KL | distinct-2 | blank | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario in scenarios:
        for context in contexts:
            for objective in OBJECTIVES:
                rs = pick(context, objective, scenario)
                h = seed_interval([r["hit_rate"] for r in rs])
                m = seed_interval([r["misalignment"] for r in rs])
                lo, hi = wilson_interval(int(sum(r["hits"] for r in rs)), int(sum(r["num_samples"] for r in rs)))
                mean = {k: sum(r[k] for r in rs) / len(rs) for k in ("heldout_clean_loss", "kl", "distinct_2",
                                                                   "blank_fraction")}
                bad = [f"seed {r['seed']}: {r['status']}" for r in rs if not r["status"].startswith("ok")]
                lines.append(f"| {scenario} | {context} | {objective} | {_ci(h.mean, max(0.0, h.low), min(1.0, h.high))} | "
                             f"[{_g(lo)}, {_g(hi)}] | {_ci(m.mean, max(0.0, m.low), m.high, 4)} | "
                             f"{_g(mean['heldout_clean_loss'])} | {_g(mean['kl'], 1)} | {_g(mean['distinct_2'], 2)} | "
                             f"{_g(mean['blank_fraction'], 2)} | {'; '.join(bad) or 'ok'} |")
    lines += ["", "Conditional / MLE, paired by seed (geometric mean of the per-seed ratios [95% t interval of the "
              "mean log]); last column: the ratio at the longer context over the ratio at the shorter, paired by "
              "seed (< 1: the longer context helps conditional training).", "",
              "| scenario | " + " | ".join(f"hit-rate ratio, context {c}" for c in contexts) +
              " | per-seed ratios | change with context |", "|---|" + "---|" * (len(contexts) + 2)]
    for scenario in scenarios:
        per_context = {}
        for context in contexts:
            cond, mle = pick(context, "conditional", scenario), pick(context, "mle", scenario)
            per_context[context] = paired_ratio([_rate(r) for r in cond], [_rate(r) for r in mle])
        first, last = per_context[contexts[0]], per_context[contexts[-1]]
        change = paired_ratio(last.ratios, first.ratios)
        lines.append(f"| {scenario} | " + " | ".join(_ci(p.ratio, p.low, p.high, 2) for p in per_context.values()) +
                     " | " + "; ".join(f"{c}: " + " ".join(_g(x, 2) for x in p.ratios) for c, p in per_context.items())
                     + f" | {_ci(change.ratio, change.low, change.high, 2)} |")
    lines += ["", "Clean held-out loss, conditional / MLE, paired by seed:", "",
              "| context | ratio [95% t] |", "|---|---|"]
    for context in contexts:
        cond, mle = pick(context, "conditional", SCENARIOS[0]), pick(context, "mle", SCENARIOS[0])
        p = paired_ratio([r["heldout_clean_loss"] for r in cond], [r["heldout_clean_loss"] for r in mle])
        lines.append(f"| {context} | {_ci(p.ratio, p.low, p.high, 3)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="make laptop-pii's sweep folder (128-token context)")
    parser.add_argument("context", type=Path, help="make structure-context's sweep folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the context folder)")
    args = parser.parse_args(argv)
    folders = {}
    for folder in (args.base, args.context):
        runs = load(folder, str(folder))
        sizes = {block_size(r) for r in runs.values()}
        if len(sizes) != 1:
            raise SystemExit(f"context_collect: {folder}: runs with different model.block_size {sorted(sizes)}")
        folders[sizes.pop()] = runs
    if len(folders) != 2:
        raise SystemExit("context_collect: both folders have the same model.block_size: nothing to compare")
    contexts = sorted(folders)
    seeds = sorted(set.intersection(*({s for (o, s) in runs} for runs in folders.values())))
    seeds = [s for s in seeds if all((o, s) in runs for runs in folders.values() for o in OBJECTIVES)]
    if len(seeds) < 2:
        raise SystemExit(f"context_collect: {len(seeds)} seed(s) with MLE and conditional in both folders; need 2")
    rows = [r for c in contexts for r in rows_of(folders[c], seeds, c)]
    missing = {(r["scenario"], r["run"]) for r in rows if not math.isfinite(r["hits"])}
    if any(scenario == SCENARIOS[0] for scenario, _ in missing):
        raise SystemExit("context_collect: no samples of the paper's protocol (`unconditional`) in "
                         + ", ".join(sorted(run for scenario, run in missing if scenario == SCENARIOS[0])))
    for scenario, run in sorted(missing):  # the secondary protocol, when a run lacks it, is left out, visibly
        print(f"context_collect: {run} has no `{scenario}` samples: that scenario is left out")
    scenarios = [s for s in SCENARIOS if s not in {scenario for scenario, _ in missing}]
    rows = [r for r in rows if r["scenario"] in scenarios]
    out = args.out or args.context
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "context.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = "# MLE vs conditional at two context lengths (demo corpus, s5)\n\n" + tables(rows, contexts, seeds, scenarios)
    (out / "context.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
