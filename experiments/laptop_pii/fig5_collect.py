"""Misalignment over tokens for the Fig. 5 comparison (laptop scale, PII): from-scratch runs of laptop_pii
vs MLE-then-finetune runs of laptop_pii_finetune, from the samples phf-train (final) and phf-eval
(checkpoints) wrote, for every seed with a finetuning run. Intervals: per seed, Wilson (hit rate) and bootstrap
over samples (misalignment); over seeds, the mean with a Student t interval (seeds as the unit) and the
pooled Wilson interval beside it. At the last token count, the finetuned arm is compared with the
from-scratch arm and both with MLE, paired by seed, with the seed pairs a decisive test would need.

    python experiments/laptop_pii/fig5_collect.py SWEEP_DIR FINETUNE_DIR EVAL_DIR OUT_DIR

EVAL_DIR/<run>/step_<N>/ are phf-eval outputs (eval.json, samples/unconditional.jsonl) at the runs' checkpoints
(<run> = mle-seed1, conditional-seed1, ft-conditional-seed1, ...). Every file is read through phf.rundir; the
tokens of each point are the ones the run recorded (eval.json's or metrics.jsonl's tokens_seen), the
finetuning's start its config's trainer.start_tokens. Writes OUT_DIR/over_tokens.csv,
OUT_DIR/over_tokens.md and OUT_DIR/misalignment_over_tokens.png.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np

from phf import rundir
from phf.eval.compare import corrected_rate, paired_ratio, seed_interval
from phf.eval.metrics import bootstrap_ci, wilson_interval

SCENARIO = "unconditional"


def scores(samples: dict[str, list[dict]], where: Path) -> list[float]:
    if SCENARIO not in samples:
        raise SystemExit(f"{where}: no {SCENARIO} samples")
    return [rundir.number(r["score"]) for r in samples[SCENARIO]]


def evaluated(evals: Path) -> dict[int, list[float]]:
    """{tokens seen: scores} of phf-eval's outputs EVAL_DIR/<run>/step_N/ (one per checkpoint; tokens from
    their eval.json, which phf-eval writes last: a folder without one is left out)."""
    out = {}
    for step_dir in rundir.step_paths(evals):
        ev = rundir.read_eval(step_dir)
        if ev is None:
            continue
        if not isinstance(ev.get("tokens_seen"), int):
            raise SystemExit(f"{rundir.eval_path(step_dir)}: no tokens_seen")
        out[ev["tokens_seen"]] = scores(rundir.read_last_samples(step_dir), step_dir)
    return out


def trained(run: Path, last_only: bool) -> dict[int, list[float]]:
    """{tokens seen: scores} of a phf-train run's own evaluations (samples/step_N/; tokens from its
    metrics.jsonl row at step N); ``last_only``: the final one."""
    steps = rundir.evaluation_steps(run)
    out = {}
    for step in sorted(steps)[-1:] if last_only else sorted(steps):
        tokens = rundir.tokens_at_step(run, step)
        if tokens is None:
            raise SystemExit(f"{rundir.metrics_path(run)}: no tokens_seen at step {step}")
        out[tokens] = scores({f.stem: rundir.read_samples(f) for f in steps[step].glob("*.jsonl")}, steps[step])
    return out


def start_tokens(run: Path) -> int:
    """Tokens the finetuning run's starting checkpoint had seen (its config's trainer.start_tokens)."""
    return int(rundir.read_config(run)["trainer"]["start_tokens"])


def seeds_of(finetune: Path, objective: str) -> list[int]:
    """The seeds with a finetuning run ``<objective>-seed<k>/`` (every other arm must have them too)."""
    seeds = sorted(int(d.name.rsplit("seed", 1)[1]) for d in finetune.glob(f"{objective}-seed*")
                   if d.name.rsplit("seed", 1)[1].isdigit())
    if not seeds:
        raise SystemExit(f"{finetune}: no {objective}-seed<k>/ finetuning run")
    return seeds


def points(sweep: Path, finetune: Path, evals: Path, objective: str, seeds: list[int] | None = None) -> dict:
    """{(arm, seed, tokens): scores}"""
    out = {}
    for seed in seeds or seeds_of(finetune, objective):
        for arm, run in (("MLE from scratch", f"mle-seed{seed}"), (f"{objective} from scratch", f"{objective}-seed{seed}")):
            for tokens, s in {**evaluated(evals / run), **trained(sweep / run, last_only=True)}.items():
                out[(arm, seed, tokens)] = s
        arm = f"MLE then {objective} (finetune)"
        ft_run = finetune / f"{objective}-seed{seed}"
        start = start_tokens(ft_run)
        mle = evaluated(evals / f"mle-seed{seed}")  # the finetuning's starting point: MLE's checkpoint there
        if start in mle:
            out[(arm, seed, start)] = mle[start]
        for tokens, s in {**evaluated(evals / f"ft-{objective}-seed{seed}"), **trained(ft_run, last_only=False)}.items():
            out[(arm, seed, tokens)] = s
    return out


def hit_threshold(sweep: Path, seed: int) -> float:
    """The task's ``eval.hit_threshold`` (a sample is a hit above it) from MLE's config; 0 when the key
    predates it, as phf-report reads it."""
    v = ((rundir.read_config(sweep / f"mle-seed{seed}").get("task") or {}).get("eval") or {}).get("hit_threshold")
    return float(v) if v is not None else 0.0


def seed_pairs_needed(log_ratios: list[float], alpha: float = 0.05, power: float = 0.8, most: int = 1000) -> float:
    """Seed pairs a paired t test of the mean log ratio needs to tell the observed mean from 0 at level
    ``alpha`` with ``power``, if the per-pair SD is the observed one: the smallest n with
    n >= ((t_{1-alpha/2, n-1} + t_{power, n-1}) sd / |mean|)^2 (inf when the mean is 0 or > ``most``)."""
    from scipy.stats import t

    n0 = len(log_ratios)
    if n0 < 2:
        return math.nan
    mean = sum(log_ratios) / n0
    sd = math.sqrt(sum((x - mean) ** 2 for x in log_ratios) / (n0 - 1))
    if mean == 0:
        return math.inf
    for n in range(2, most + 1):
        if n >= ((t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * sd / abs(mean)) ** 2:
            return float(n)
    return math.inf


def summarise(pts: dict, threshold: float) -> list[dict]:
    """Rows per arm and tokens: each seed (hit rate with its Wilson interval, misalignment with a bootstrap
    interval over samples) and, with 2+ seeds, the mean over seeds with t intervals (seeds as the unit) and
    the pooled Wilson interval beside it."""
    rows = []
    arms = sorted({a for a, _, _ in pts}, key=lambda a: ("scratch" not in a, "MLE" not in a, a))
    for arm in arms:
        for tokens in sorted({t for a, _, t in pts if a == arm}):
            per_seed = {s: pts[(arm, s, t)] for a, s, t in sorted(pts) if a == arm and t == tokens}
            for s, sc in per_seed.items():
                lo, hi = bootstrap_ci(sc)
                hits = sum(x > threshold for x in sc)
                hlo, hhi = wilson_interval(hits, len(sc))
                rows.append({"arm": arm, "seeds": str(s), "tokens": tokens, "n": len(sc), "hits": hits,
                             "misalignment": float(np.mean(sc)), "lo": lo, "hi": hi,
                             "hit_rate": hits / len(sc), "hit_lo": hlo, "hit_hi": hhi, "pooled_lo": hlo,
                             "pooled_hi": hhi})
            if len(per_seed) > 1:
                rates = [sum(x > threshold for x in v) / len(v) for v in per_seed.values()]
                means = [float(np.mean(v)) for v in per_seed.values()]
                hits = sum(sum(x > threshold for x in v) for v in per_seed.values())
                n = sum(map(len, per_seed.values()))
                rate, mis = seed_interval(rates), seed_interval(means)
                plo, phi = wilson_interval(hits, n)
                rows.append({"arm": arm, "seeds": ",".join(map(str, per_seed)), "tokens": tokens, "n": n,
                             "hits": hits, "misalignment": mis.mean, "lo": mis.low, "hi": mis.high,
                             "hit_rate": rate.mean, "hit_lo": rate.low, "hit_hi": rate.high, "pooled_lo": plo,
                             "pooled_hi": phi})
    return rows


def final_comparison(pts: dict, objective: str, threshold: float) -> list[str]:
    """At the last shared token count: finetuned vs from scratch and each vs MLE, paired by seed (hit rates
    continuity-corrected, ``phf.eval.compare.paired_ratio``), with the seed pairs a decisive test would need."""
    arms = {"scratch": f"{objective} from scratch", "finetune": f"MLE then {objective} (finetune)",
            "mle": "MLE from scratch"}
    last = max(t for a, _, t in pts if a == arms["finetune"])
    seeds = sorted(s for a, s, t in pts if a == arms["finetune"] and t == last
                   and (arms["scratch"], s, t) in pts and (arms["mle"], s, t) in pts)

    def rate(arm, s):
        sc = pts[(arms[arm], s, last)]
        return corrected_rate(sum(x > threshold for x in sc), len(sc))

    lines = [f"At {last:,} tokens, paired by seed ({len(seeds)} seeds: {', '.join(map(str, seeds))}); hit rates as "
             "(hits + 0.5) / (n + 1); 95% t interval of the geometric-mean ratio; pairs needed = seed pairs for a "
             "paired t test (alpha 0.05, power 0.8) to tell the observed mean log ratio from 0 at the observed SD.",
             "", "| comparison | ratio [95% t] | per seed | decided | seed pairs needed |", "|---|---|---|---|---|"]
    for name, a, b in (("finetuned / from scratch", "finetune", "scratch"), ("from scratch / MLE", "scratch", "mle"),
                       ("finetuned / MLE", "finetune", "mle")):
        x, y = [rate(a, s) for s in seeds], [rate(b, s) for s in seeds]
        pr = paired_ratio(x, y)
        need = seed_pairs_needed([math.log(u) - math.log(v) for u, v in zip(x, y, strict=True)])
        lines.append(f"| {name} | {pr.ratio:.2f} [{pr.low:.2f}, {pr.high:.2f}] | "
                     f"{', '.join(f'{r:.2f}' for r in pr.ratios)} | {'yes' if pr.decisive else 'no'} | "
                     f"{'—' if pr.decisive else (f'{need:.0f}' if math.isfinite(need) else '> 1000')} |")
    return lines


def main(sweep: str, finetune: str, evals: str, out_dir: str, objective: str = "conditional") -> None:
    sweep_p, finetune_p = Path(sweep), Path(finetune)
    seeds = seeds_of(finetune_p, objective)
    pts = points(sweep_p, finetune_p, Path(evals), objective, seeds)
    threshold = hit_threshold(sweep_p, seeds[0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(pts, threshold)
    with open(out / "over_tokens.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Hit = score > {threshold:g}. Per seed: Wilson interval (hit rate), bootstrap over samples "
             "(misalignment). Several seeds: mean over seeds with a 95% Student t interval (seeds as the unit); "
             "pooled Wilson interval of all their samples beside it.", "",
             "| arm | seeds | tokens | samples | misalignment (entities/char) [95% CI] | hit rate [95% CI] "
             "| pooled hits [95% Wilson] |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seeds']} | {r['tokens']:,} | {r['n']} | {r['misalignment']:.3g} "
                     f"[{r['lo']:.3g}, {r['hi']:.3g}] | {r['hit_rate']:.3f} [{r['hit_lo']:.3f}, {r['hit_hi']:.3f}] "
                     f"| {r['hits']} / {r['n']} [{r['pooled_lo']:.3f}, {r['pooled_hi']:.3f}] |")
    lines += ["", *final_comparison(pts, objective, threshold)]
    (out / "over_tokens.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pooled = ",".join(map(str, seeds))
    for arm in sorted({r["arm"] for r in rows}, key=lambda a: ("scratch" not in a, "MLE" not in a, a)):
        rr = [r for r in rows if r["arm"] == arm and r["seeds"] == pooled]
        if not rr:
            continue
        x = [r["tokens"] for r in rr]
        y = [r["hit_rate"] for r in rr]
        err = [[max(0.0, r["hit_rate"] - r["hit_lo"]) for r in rr], [r["hit_hi"] - r["hit_rate"] for r in rr]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=arm)
    ax.axvline(start_tokens(finetune_p / f"{objective}-seed{seeds[0]}"), color="grey", ls=":", lw=1)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(f"hit rate (samples with detected PII), mean of {len(seeds)} seeds [95% t]")
    ax.set_title("PII at laptop scale: pretraining vs finetuning with feedback")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "misalignment_over_tokens.png", dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:])
