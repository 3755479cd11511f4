"""Which pycodestyle violations the laptop PEP8 runs' samples contain, per objective, beside the training
corpus's own: a violation a 1.46M-parameter model makes because it writes broken code (an unclosed
bracket's continuation lines, a 200-character line) is not behaviour it imitated from the data, and an
objective that steers away from the data's violations need not remove it.

    python experiments/laptop_pep8/violation_types.py SWEEP_DIR OUT_DIR [--docs N]

Reads SWEEP_DIR/<objective>-seed<s>/samples/step_*/unconditional.jsonl (the final samples) and, for the
corpus, N files spread evenly over the sweep's local_pep8 source (its config). Counts violations per 1,000
characters by pycodestyle code family (E1 indentation, E2 whitespace, E3 blank lines, E5 line length,
E7 statements, E9/E902 errors, W whitespace warnings). Writes OUT_DIR/violation_types.md.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from phf import rundir
from phf.scorers.pep8 import PEP8Scorer

OBJECTIVES = ("mle", "filtering", "conditional", "unlikelihood", "rwr", "awr")
FAMILIES = ("E1", "E2", "E3", "E5", "E7", "E9", "W")


def family(message: str) -> str:
    code = message.split()[0]
    return "W" if code.startswith("W") else code[:2]


def rates(texts: list[str], scorer: PEP8Scorer) -> tuple[dict[str, float], int]:
    counts: Counter = Counter()
    chars = 0
    for t in texts:
        chars += len(t)
        counts.update(family(m) for _, _, m in scorer.violations(t))
    return {f: 1000 * counts[f] / max(chars, 1) for f in FAMILIES}, chars


def corpus_texts(sweep: Path, n_docs: int) -> list[str]:
    """``n_docs`` files spread evenly over the sweep's local_pep8 source (its run config)."""
    from hydra.utils import instantiate

    cfg = rundir.read_config(sweep / "mle-seed1")
    docs = ["".join(d.texts) for d in instantiate(cfg["data"]["source"])]
    stride = max(len(docs) // n_docs, 1)
    return docs[::stride][:n_docs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--docs", type=int, default=200)
    args = ap.parse_args()
    scorer = PEP8Scorer()
    rows = []
    for obj in OBJECTIVES:
        texts = []
        for run in sorted(args.sweep.glob(f"{obj}-seed*")):
            steps = rundir.evaluation_steps(run)
            if not steps:  # still training
                print(f"{run}: no samples yet, left out")
                continue
            final = steps[max(steps)] / "unconditional.jsonl"
            texts += [row["text"] for row in rundir.read_samples(final)]
        if texts:
            r, chars = rates(texts, scorer)
            rows.append((f"{obj} samples ({len(texts)})", r, chars))
    texts = corpus_texts(args.sweep, args.docs)
    r, chars = rates(texts, scorer)
    rows.append((f"training corpus ({len(texts)} files)", r, chars))
    lines = ["| text | " + " | ".join(FAMILIES) + " | all | characters |", "|---|" + "---|" * (len(FAMILIES) + 2)]
    for name, r, chars in rows:
        lines.append(f"| {name} | " + " | ".join(f"{r[f]:.1f}" for f in FAMILIES) + f" | {sum(r.values()):.1f} | {chars:,} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "violation_types.md").write_text(
        "Violations per 1,000 characters by pycodestyle code family (E1 indentation, E2 whitespace, E3 blank\n"
        "lines, E5 line length, E7 statements, E9 errors incl. E902, W warnings).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
