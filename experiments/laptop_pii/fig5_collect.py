"""Misalignment over tokens for the Fig. 5 comparison (laptop scale, PII): from-scratch runs of laptop_pii
vs MLE-then-finetune runs of laptop_pii_finetune, from the samples phf-train (final) and phf-eval
(checkpoints) wrote. Intervals: 95% bootstrap over samples (per seed) and the two-level bootstrap of
phf-report over seeds and samples (pooled row).

    python experiments/laptop_pii/fig5_collect.py SWEEP_DIR FINETUNE_DIR EVAL_DIR OUT_DIR

EVAL_DIR/<run>/step_<N>/samples/unconditional.jsonl are phf-eval outputs at the runs' checkpoints
(<run> = mle-seed1, conditional-seed1, ft-conditional-seed1, ...). Writes OUT_DIR/over_tokens.csv,
OUT_DIR/over_tokens.md and OUT_DIR/misalignment_over_tokens.png.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from phf.eval.metrics import bootstrap_ci
from phf.report import hierarchical_ci

TOKENS_PER_STEP = 1024
SCENARIO = "unconditional"


def read(path: Path) -> list[float]:
    return [json.loads(line)["score"] for line in path.read_text().splitlines() if line.strip()]


def points(sweep: Path, finetune: Path, evals: Path, objective: str) -> dict:
    """{(arm, seed, tokens): scores}"""
    out = {}
    for seed in (1, 2):
        for arm, run, _base in (("MLE from scratch", f"mle-seed{seed}", 0),
                               (f"{objective} from scratch", f"{objective}-seed{seed}", 0)):
            for step_dir in sorted((evals / run).glob("step_*")):
                if not (step_dir / "eval.json").is_file():  # phf-eval writes eval.json last
                    continue
                out[(arm, seed, int(step_dir.name[5:]) * TOKENS_PER_STEP)] = read(step_dir / "samples" / f"{SCENARIO}.jsonl")
            final = sweep / run / "samples" / "step_00001500" / f"{SCENARIO}.jsonl"
            if not final.is_file():
                final = sweep / run / "samples" / "step_0001500" / f"{SCENARIO}.jsonl"
            if final.is_file():
                out[(arm, seed, 1500 * TOKENS_PER_STEP)] = read(final)
        arm = f"MLE then {objective} (finetune)"
        mle750 = evals / f"mle-seed{seed}" / "step_00000750" / "samples" / f"{SCENARIO}.jsonl"
        if mle750.is_file():
            out[(arm, seed, 750 * TOKENS_PER_STEP)] = read(mle750)
        ft = f"ft-{objective}-seed{seed}"
        for step_dir in sorted((evals / ft).glob("step_*")):
            if not (step_dir / "eval.json").is_file():
                continue
            out[(arm, seed, (750 + int(step_dir.name[5:])) * TOKENS_PER_STEP)] = read(step_dir / "samples" / f"{SCENARIO}.jsonl")
        for final in sorted((finetune / f"{objective}-seed{seed}" / "samples").glob("step_*")):
            out[(arm, seed, (750 + int(final.name[5:])) * TOKENS_PER_STEP)] = read(final / f"{SCENARIO}.jsonl")
    return out


def main(sweep: str, finetune: str, evals: str, out_dir: str, objective: str = "conditional") -> None:
    pts = points(Path(sweep), Path(finetune), Path(evals), objective)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    arms = sorted({a for a, _, _ in pts}, key=lambda a: ("scratch" not in a, "MLE" not in a, a))
    for arm in arms:
        for tokens in sorted({t for a, _, t in pts if a == arm}):
            per_seed = {s: pts[(arm, s, tokens)] for s in (1, 2) if (arm, s, tokens) in pts}
            for s, scores in per_seed.items():
                lo, hi = bootstrap_ci(scores)
                hits = [float(x > 0) for x in scores]
                hlo, hhi = bootstrap_ci(hits)
                rows.append({"arm": arm, "seeds": str(s), "tokens": tokens, "n": len(scores),
                             "misalignment": float(np.mean(scores)), "lo": lo, "hi": hi,
                             "hit_rate": float(np.mean(hits)), "hit_lo": hlo, "hit_hi": hhi})
            if len(per_seed) == 2:
                lists = list(per_seed.values())
                lo, hi = hierarchical_ci(lists)
                hits = [[float(x > 0) for x in v] for v in lists]
                hlo, hhi = hierarchical_ci(hits)
                rows.append({"arm": arm, "seeds": "1,2", "tokens": tokens, "n": sum(map(len, lists)),
                             "misalignment": float(np.mean([np.mean(v) for v in lists])), "lo": lo, "hi": hi,
                             "hit_rate": float(np.mean([np.mean(v) for v in hits])), "hit_lo": hlo, "hit_hi": hhi})
    with open(out / "over_tokens.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| arm | seeds | tokens | samples | misalignment (PII entities/char) [95% CI] | hit rate [95% CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seeds']} | {r['tokens']:,} | {r['n']} | {r['misalignment']:.3g} "
                     f"[{r['lo']:.3g}, {r['hi']:.3g}] | {r['hit_rate']:.3f} [{r['hit_lo']:.3f}, {r['hit_hi']:.3f}] |")
    (out / "over_tokens.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm in arms:
        rr = [r for r in rows if r["arm"] == arm and r["seeds"] == "1,2"]
        if not rr:
            continue
        x = [r["tokens"] for r in rr]
        y = [r["hit_rate"] for r in rr]
        err = [[r["hit_rate"] - r["hit_lo"] for r in rr], [r["hit_hi"] - r["hit_rate"] for r in rr]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=arm)
    ax.axvline(750 * TOKENS_PER_STEP, color="grey", ls=":", lw=1)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("hit rate (samples with detected PII), 2 seeds")
    ax.set_title("PII at laptop scale: pretraining vs finetuning with feedback")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "misalignment_over_tokens.png", dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:])
