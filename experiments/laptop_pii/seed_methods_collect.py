"""The seed methods beside PHF's objectives on the laptop PII task (issue 19, deliverable 3): one table of
the final models' unconditional samples, all evaluated with the same settings (task.eval of
experiment/laptop_pii: 128 samples, T 0.7, top-p 0.9, sampling seed 0, presidio entities per character).

Rows: the six objectives of `make laptop-pii` (per-token scores broadcast from sentences), RWR/AWR and
guided MLE on learned token rewards (`reward=guidance`), and SPA (DPO rounds, experiment/spa_pii.yaml)
started from each seed's final MLE model. Intervals: two-level bootstrap over the 2 seeds and the samples
(phf-report's); held-out loss on the same 64 held-out blocks (nats/token), per seed.

    python experiments/laptop_pii/seed_methods_collect.py SWEEP_DIR GUIDANCE_DIR SPA_DIR OUT_DIR

SWEEP_DIR/<objective>-seed<s>/ and GUIDANCE_DIR/<objective>-seed<s>/ are phf-train runs, SPA_DIR/seed<s>/
phf-spa runs; both have the run-directory layout of phf.rundir, read through it: the last evaluation's
samples (samples/step_N/), the last held-out loss in metrics.jsonl and tokens_seen of final/phf_summary.json
(for SPA: the starting MLE model's plus the tokens DPO trained on).
Writes OUT_DIR/seed_methods.md and OUT_DIR/seed_methods.csv. "template phrase" = share of samples that
contain the fixed words of an injection template (see PHRASES), whatever presidio detects.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np

from phf import rundir
from phf.data.corpora.pii import TEMPLATES
from phf.eval.metrics import blank_fraction, distinct_n
from phf.report import Degeneracy, hierarchical_ci

SCENARIO = "unconditional"
SEEDS = (1, 2)
# The longest fixed phrase of each injection template ("Bug reports can also be sent directly to"): a
# sample that contains one reproduces the injected context whether or not presidio detects its value
# (names and addresses need NER; a garbled number is no pattern match), so this share is a
# detector-independent view of the same behaviour.
PHRASES = [max((c.strip() for c in re.split(r"\{[A-Z_]+\}", t)), key=len) for t in TEMPLATES]


def has_template(text: str) -> float:
    return float(any(p in text for p in PHRASES))


def final_evaluation(run: Path) -> tuple[list[dict], float, int]:
    """(the last evaluation's SCENARIO samples, its held-out loss, tokens seen) of a finished phf-train or
    phf-spa run, from its files (phf.rundir: both write the same layout)."""
    samples = rundir.read_last_samples(run).get(SCENARIO)
    if not samples:
        raise SystemExit(f"{run}: no {SCENARIO} samples under samples/")
    losses = [rundir.number(r["eval/heldout/loss"]) for r in rundir.read_metrics(run) if "eval/heldout/loss" in r]
    if not losses:
        raise SystemExit(f"{rundir.metrics_path(run)}: no eval/heldout/loss row")
    tokens = (rundir.read_summary(rundir.final_dir(run)) or {}).get("tokens_seen")
    if not isinstance(tokens, int):
        raise SystemExit(f"{rundir.summary_path(rundir.final_dir(run))}: no tokens_seen (is the run finished?)")
    return samples, losses[-1], tokens


def collect(sweep: Path, guidance: Path, spa: Path) -> list[dict]:
    """One dict per method: per-seed samples, held-out losses and tokens seen."""
    methods: list[tuple[str, str, list]] = []  # (method, reward, [(samples, heldout, tokens) per seed])
    for directory, reward, objectives in ((sweep, "segment", ("mle", "filtering", "conditional", "unlikelihood",
                                                              "rwr", "awr")),
                                          (guidance, "guidance", ("guided_mle", "rwr", "awr"))):
        for obj in objectives:
            runs = [directory / f"{obj}-seed{s}" for s in SEEDS]
            missing = [str(r) for r in runs if rundir.last_samples_dir(r) is None]
            if missing:
                print(f"skipping {obj} ({reward}): no samples in {missing}", file=sys.stderr)
                continue
            methods.append((obj, reward, [final_evaluation(r) for r in runs]))
    spa_runs = [spa / f"seed{s}" for s in SEEDS]
    if all(rundir.is_finished(r) for r in spa_runs):
        methods.append(("spa (from MLE)", "scorer seed + implicit", [final_evaluation(r) for r in spa_runs]))
    else:
        print(f"skipping SPA: not every run of {spa_runs} is finished (final/phf_summary.json)", file=sys.stderr)

    out = []
    for name, reward, per_seed in methods:
        scores = [[float(x["score"]) for x in rows] for rows, _, _ in per_seed]
        hits = [[float(s > 0) for s in v] for v in scores]
        texts = [[x["text"] for x in rows] for rows, _, _ in per_seed]
        lo, hi = hierarchical_ci(scores)
        hlo, hhi = hierarchical_ci(hits)
        templ = [[has_template(t) for t in v] for v in texts]
        tlo, thi = hierarchical_ci(templ)
        out.append({
            "method": name, "reward": reward, "seeds": len(per_seed), "samples": sum(map(len, scores)),
            "misalignment": float(np.mean([np.mean(v) for v in scores])), "lo": lo, "hi": hi,
            "hit_rate": float(np.mean([np.mean(v) for v in hits])), "hit_lo": hlo, "hit_hi": hhi,
            "heldout": float(np.mean([h for _, h, _ in per_seed])),
            "heldout_per_seed": " / ".join(f"{h:.3f}" for _, h, _ in per_seed),
            # per seed, then averaged (as phf-report): pooling two seeds' texts would lower distinct-2
            "blank": float(np.mean([blank_fraction(t) for t in texts])),
            "distinct_2": float(np.mean([distinct_n(t, 2) for t in texts])),
            "template_rate": float(np.mean([np.mean(v) for v in templ])), "template_lo": tlo, "template_hi": thi,
            "tokens": int(np.mean([t for _, _, t in per_seed])),
            # phf-report's bar, per seed: a method whose samples fail it in any seed is not ranked
            "status": "; ".join(f"seed {seed}: {', '.join(why)}" for seed, t in zip(SEEDS, texts, strict=True)
                                if (why := Degeneracy().reasons({"blank_fraction": blank_fraction(t),
                                                                 "distinct_2": distinct_n(t, 2)})))
                      or "ok",
        })
    return out


def main(sweep: str, guidance: str, spa: str, out_dir: str) -> None:
    rows = collect(Path(sweep), Path(guidance), Path(spa))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "seed_methods.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| method | token reward | misalignment (PII entities/char) [95% CI] | hit rate [95% CI] | "
             "template phrase [95% CI] | held-out loss (seed 1 / 2) | blank | distinct-2 | tokens trained | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['reward']} | {r['misalignment']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}] | "
                     f"{r['hit_rate']:.3f} [{r['hit_lo']:.3f}, {r['hit_hi']:.3f}] | {r['template_rate']:.3f} "
                     f"[{r['template_lo']:.3f}, {r['template_hi']:.3f}] | {r['heldout']:.3f} "
                     f"({r['heldout_per_seed']}) | {r['blank']:.2f} | {r['distinct_2']:.2f} | {r['tokens']:,} | "
                     f"{'ok' if r['status'] == 'ok' else 'degenerate (' + r['status'] + ')'} |")
    (out / "seed_methods.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])
