"""Tables of the SPA-vs-conditional PEP8 experiment from its run directories (see README.md).

    python experiments/spa_pep8/summarize.py outputs/spa_pep8 > summary.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from phf import rundir

SCENARIOS = ["unconditional", "functions"]  # red_team_prompts: its prompts do not fit a 64-token context
START = Path("checkpoints") / "step_00000200"  # where both finetunes start, in the MLE run (run.sh's START)


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def fmt(v, digits=4) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "–"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def times(out: Path) -> dict[str, dict[str, float]]:
    rows = {}
    f = out / "times.txt"
    if f.is_file():
        for line in f.read_text().splitlines():
            parts = line.split()
            if parts and "=" in line and not line.startswith("Command"):
                rows[parts[0]] = {k: float(v) for k, v in (p.split("=") for p in parts[1:])}
    return rows


def mle_continued(out: Path) -> tuple[dict, int | None]:
    """phf-eval's metrics of the MLE run's final model (flat ``eval/...`` keys) and the tokens it trained on
    after the step-200 checkpoint the finetunes start from, both read from the runs' files."""
    doc = rundir.read_eval(out / "mle_eval")
    if doc is None:
        return {}, None
    from phf.eval.evaluate import flatten

    final = rundir.read_summary(rundir.final_dir(out / "mle")) or {}
    start = rundir.tokens_at_step(out / "mle", rundir.parse_step(START.name))
    tokens = final.get("tokens_seen") - start if final.get("tokens_seen") is not None and start is not None else None
    return flatten(doc), tokens


def main(out: Path) -> None:
    spa = load(out / "spa" / rundir.SPA_SUMMARY).get("stages", [])
    mle, mle_tokens = mle_continued(out)
    cond = load(rundir.summary_path(rundir.final_dir(out / "conditional")))
    start = spa[0] if spa else {}
    runs = [("MLE step 200 (start)", start, 0)]
    runs += [(f"MLE → SPA {r['stage']} ({r['spa/labeler']})", r, r["spa/cumulative/tokens_trained"]) for r in spa[1:]]
    runs += [("MLE → conditional (same tokens)", cond, cond.get("tokens_seen")),
             ("MLE continued to step 300", mle, mle_tokens)]
    print("| run | finetune tokens | " + " | ".join(f"{s} score" for s in SCENARIOS)
          + " | unconditional length (chars) | KL(start ‖ model) | held-out loss |")
    print("|---|" + "---|" * (len(SCENARIOS) + 4))
    for name, r, tok in runs:
        if not r:
            continue
        cells = [fmt(tok)] + [fmt(r.get(f"eval/{s}/score")) for s in SCENARIOS]
        cells += [fmt(r.get("eval/unconditional/length")), fmt(r.get("eval/kl")), fmt(r.get("eval/heldout/loss"))]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if spa[1:]:
        print("\n| SPA stage | prompts | pairs | scorer labels | dropped ties / identical | implicit agreement with scorer "
              "(judged pairs) | flagged: mislabelled / unflagged: mislabelled | sampled tokens | DPO steps | "
              "DPO accuracy | wall s (generate / label / train) |")
        print("|---|" + "---|" * 10)
        for r in spa[1:]:
            print(f"| {r['stage']} | {r['spa/prompts']} | {r['spa/pairs']} | {r['spa/scorer_labels']} | "
                  f"{fmt(r['spa/pairs/dropped_ties'])} / {fmt(r['spa/pairs/dropped_identical'])} | "
                  f"{fmt(r['spa/pairs/implicit_agreement'], 3)} ({fmt(r['spa/pairs/implicit_judged'])}) | "
                  f"{fmt(r['spa/refine/flag_mislabelled'], 3)} / {fmt(r['spa/refine/unflagged_mislabelled'], 3)} | "
                  f"{fmt(r['spa/samples/tokens'], 3)} | {r['spa/steps']} | {fmt(r['spa/train/dpo/accuracy'], 3)} | "
                  f"{fmt(r.get('spa/generate_s', 0), 3)} / {fmt(r.get('spa/label_s', 0), 3)} / "
                  f"{fmt(r['spa/train_s'], 3)} |")
    t = times(out)
    if t:
        print("\n| job | wall s | CPU s (user + sys) | max RSS MB |")
        print("|---|---|---|---|")
        for name, v in t.items():
            print(f"| {name} | {v['wall_s']:.0f} | {v['user_s'] + v['sys_s']:.0f} | {v['maxrss_kb'] / 1024:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/spa_pep8"))
