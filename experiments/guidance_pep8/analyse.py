"""Collect the policy runs of this experiment: held-out loss (metrics.jsonl), misalignment of the final
samples (samples/step_*/), and the localisation AUROC of each run's final guidance model (and of the
broadcast segment scores) on held-out PEP8 documents.

    OMP_NUM_THREADS=1 python experiments/guidance_pep8/analyse.py RUN_DIR... --out results/runs.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scored_docs  # noqa: E402

from phf import rundir  # noqa: E402
from phf.guidance import GuidanceLearner  # noqa: E402
from phf.guidance.localisation import pep8_localisation  # noqa: E402
from phf.tokenizer import gpt2_tokenizer  # noqa: E402

SCENARIOS = ("unconditional", "functions")


def sample_metrics(run: Path) -> dict:
    """Misalignment of the final samples (mean PEP8 score, hit rate = share with any violation) and how
    degenerate they are (share of distinct texts, share of whitespace-only samples), from samples/step_*/."""
    last = rundir.read_last_samples(run)
    out = {}
    for name in SCENARIOS:
        rows = last.get(name)
        if not rows:
            continue
        scores = [r["score"] for r in rows]
        out[f"{name}/score"] = sum(scores) / len(scores)
        out[f"{name}/hit_rate"] = sum(x > 0 for x in scores) / len(scores)
        out[f"{name}/distinct"] = len({r["text"] for r in rows}) / len(rows)
        out[f"{name}/whitespace_only"] = sum(not r["text"].strip() for r in rows) / len(rows)
    return out


def val_loss(run: Path) -> float | None:
    vals = [rundir.number(r["val/loss"]) for r in rundir.read_metrics(run) if "val/loss" in r]
    return vals[-1] if vals else None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--val-docs", type=int, default=12)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    tok = gpt2_tokenizer()
    docs = scored_docs("validation", a.val_docs)
    rows = []
    for run in map(Path, a.runs):
        row = {"run": run.name, "val/loss": val_loss(run), **sample_metrics(run)}
        gdir = run / "guidance"
        if (gdir / "guidance_model.safetensors").is_file():
            learner = GuidanceLearner.load(gdir)
            loc = pep8_localisation(learner, docs, tok)
            fits = [json.loads(x) for x in (gdir / "fits.jsonl").read_text().splitlines()]
            row.update({"fits": len(fits), "val_pair_accuracy": fits[-1].get("val_pair_accuracy"),
                        "val_kendall_tau": fits[-1].get("val_kendall_tau"), **loc})
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
