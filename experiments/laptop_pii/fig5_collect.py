"""Misalignment over tokens for the Fig. 5 comparison (laptop scale, PII): from-scratch runs of laptop_pii
vs MLE-then-finetune runs of laptop_pii_finetune, from the samples phf-train (final) and phf-eval
(checkpoints) wrote. Intervals: 95% bootstrap over samples (per seed) and the two-level bootstrap of
phf-report over seeds and samples (pooled row).

    python experiments/laptop_pii/fig5_collect.py SWEEP_DIR FINETUNE_DIR EVAL_DIR OUT_DIR

EVAL_DIR/<run>/step_<N>/ are phf-eval outputs (eval.json, samples/unconditional.jsonl) at the runs' checkpoints
(<run> = mle-seed1, conditional-seed1, ft-conditional-seed1, ...). Every file is read through phf.rundir; the
tokens of each point are the ones the run recorded (eval.json's or metrics.jsonl's tokens_seen), the
finetuning's start its config's trainer.start_tokens. Writes OUT_DIR/over_tokens.csv,
OUT_DIR/over_tokens.md and OUT_DIR/misalignment_over_tokens.png.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from phf import rundir
from phf.eval.metrics import bootstrap_ci
from phf.report import hierarchical_ci

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


def points(sweep: Path, finetune: Path, evals: Path, objective: str) -> dict:
    """{(arm, seed, tokens): scores}"""
    out = {}
    for seed in (1, 2):
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
    ax.axvline(start_tokens(Path(finetune) / f"{objective}-seed1"), color="grey", ls=":", lw=1)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("hit rate (samples with detected PII), 2 seeds")
    ax.set_title("PII at laptop scale: pretraining vs finetuning with feedback")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "misalignment_over_tokens.png", dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:])
