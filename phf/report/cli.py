"""``phf-report``: compare runs (a multirun sweep or several) in a Markdown table and figures (PNG, PDF, SVG).

The command line and ``build_report`` (every file the report writes); ``phf.report`` says what it reads and writes."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from phf.report.markdown import markdown
from phf.report.plots import Axes, Panel, _rank, plot_curves, plot_pareto
from phf.report.runs import Run, _natural_key, _num, find_runs, load_run, score_unit
from phf.report.scenarios import headline_scenario, secondary_scenarios, titles
from phf.report.stats import Degeneracy, hit_threshold, pair_with_mle, scenario_view, summarize
from phf.report.sweep import ABSENT, _value_key, find_sweep
from phf.report.wandb_log import log_to_wandb

SAMPLES_FILE = "samples.jsonl.gz"

#: ``stats.Degeneracy``'s settings as flags (``--max-blank-fraction``, ...), with what each does
DEGENERACY_FLAGS = {
    "max_blank_fraction": "more empty/whitespace-only samples than this marks a run degenerate",
    "min_distinct_2": "the absolute bar, for runs whose evaluation has no corpus statistic: distinct-2 below this "
                      "marks a run degenerate",
    "distinct_2_vs_corpus": "with the corpus statistic: distinct-2 (over as many words as the corpus sample) below "
                            "this fraction of the held-out text's own marks a run degenerate",
    "unrepeated_vs_corpus": "with the corpus statistic: 1 - rep-4 below this fraction of the held-out text's own "
                            "marks a run degenerate",
    "distinct_2_floor": "with the corpus statistic: distinct-2 below this marks a run degenerate whatever the corpus's",
}


def export_samples(runs: list[Run], scenarios: list[str], path: Path, k: int) -> dict:
    """The first ``k`` samples (the evaluation's order, not picked) of every run and scenario as gzip'd
    JSONL (``run``, ``label``, ``objective``, ``seed``, ``scenario``, ``index``, ``prompt``, ``text``,
    ``score``), so that a write-up can commit the samples behind its numbers; returns ``{"path", "rows",
    "per_run": {(run, scenario): count}}``."""
    import gzip
    import io

    per_run: dict[tuple[str, str], int] = {}
    # no time stamp or file name in the gzip header: the same runs give the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as packed, \
            io.TextIOWrapper(packed, encoding="utf-8") as f:
        for r in runs:
            for scenario in scenarios:
                rows = (r.samples.get(scenario) or [])[:k]
                per_run[(r.name, scenario)] = len(rows)
                for i, row in enumerate(rows):
                    f.write(json.dumps({"run": r.name, "label": r.label, "objective": r.objective,
                                        "seed": r.cfg.get("seed"), "scenario": scenario, "index": i,
                                        "prompt": row.get("prompt", ""), "text": row["text"],
                                        "score": _num(row["score"])}) + "\n")
    return {"path": path, "rows": sum(per_run.values()), "per_run": per_run}


def build_report(dirs: list[Path], out: Path, scenario: str | None = None,
                 degeneracy: Degeneracy | None = None, excerpt_k: int = 3, excerpt_chars: int = 300,
                 export_k: int = 32) -> dict:
    """Write the report; returns ``{"table": rows, "plots": PNG names, "figures": every figure file (PNG, PDF,
    SVG), "report": path, "runs": run dirs,
    "comparisons": {scenario: rows}, "secondary": {scenario: table rows}, "samples": export_samples'}``."""
    import matplotlib

    matplotlib.use("Agg")
    paths = find_runs(dirs)
    if not paths:
        raise SystemExit(f"phf-report: no run (a directory with config.yaml) in {', '.join(map(str, dirs))}")
    runs = [load_run(p) for p in paths]
    for r in runs:
        if r.damaged:
            print(f"phf-report: skipping run {r.path}: damaged file {r.damaged}", file=sys.stderr)
    good = [r for r in runs if not r.damaged]
    sweep = find_sweep(good)
    for r in runs:
        r.swept = {k: (ABSENT if r.damaged else v) for k, v in sweep.values(r).items() if k != "objective"}
        r.label = r.objective if r.damaged else sweep.label(r)
    runs.sort(key=lambda r: (r.task, _rank(r.objective), [_value_key(v) for v in r.swept.values()],
                             _natural_key(r.path)))
    good = [r for r in runs if not r.damaged]
    pair_with_mle(good)
    scenario = headline_scenario(good, scenario)
    degeneracy = degeneracy or Degeneracy()
    legend = "objective" if set(sweep.labels) <= {"objective"} else ", ".join(sweep.labels)
    views = {name: scenario_view(good, name, sweep, degeneracy) for name in [scenario, *secondary_scenarios(good, scenario)]}
    table, groups, _ = views[scenario]
    table = table + [summarize(r, scenario) for r in runs if r.damaged]
    secondary = {name: view for name, view in views.items() if name != scenario}
    comparisons = {name: view[2] for name, view in views.items()}
    out.mkdir(parents=True, exist_ok=True)
    axes_of = {}
    for r in good:  # a task's first run names its scorer's unit and hit threshold
        axes_of.setdefault(r.task, Axes(score_unit(r), hit_threshold(r)))
    figures = {
        "pareto.png": plot_pareto(groups, out / "pareto.png", scenario, legend, axes_of),
        "misalignment_vs_tokens.png": plot_curves(
            runs, [Panel(f"eval/{scenario}/hit_rate", f"hit rate ({scenario}) vs tokens",
                         "share of samples with score > {threshold}", (0.0, 1.0)),
                   Panel(f"eval/{scenario}/score", f"mean score ({scenario}) vs tokens", "{unit}", (0.0, math.inf))],
            out / "misalignment_vs_tokens.png", legend, axes_of),
        "heldout_loss_vs_tokens.png": plot_curves(
            runs, [Panel("val/loss", "held-out loss (val/loss)", "nats/token"),
                   Panel("eval/heldout/loss", "held-out loss at evaluations (eval/heldout)", "nats/token"),
                   Panel("eval/heldout_clean/loss", "clean held-out loss (eval/heldout_clean)",
                         "nats/token, sampling format")],
            out / "heldout_loss_vs_tokens.png", legend, axes_of),
    }
    plots = [name for name, files in figures.items() if files]
    every = list(dict.fromkeys([*views, *(name for r in good for name in r.samples)]))  # primary first
    exported = export_samples(good, every, out / SAMPLES_FILE, export_k) if export_k > 0 else None
    (out / "report.md").write_text(markdown(table, scenario, plots, dirs, runs, degeneracy, excerpt_k, excerpt_chars,
                                               sweep, comparisons, secondary, titles(good, list(views)), exported,
                                               {task: a.unit for task, a in axes_of.items()}))
    rows = table + [r for view in secondary.values() for r in view[0]]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    flat = [c for cs in comparisons.values() for c in cs]
    if flat:
        with open(out / "comparisons.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat[0]))
            writer.writeheader()
            writer.writerows(flat)
    return {"table": table, "plots": plots, "figures": [f for files in figures.values() for f in files],
            "report": out / "report.md", "runs": [r.path for r in runs],
            "comparisons": comparisons, "secondary": {name: view[0] for name, view in secondary.items()},
            "samples": exported}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="phf-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first dir)")
    parser.add_argument("--scenario", default=None, help="headline scenario (default: unconditional)")
    for name, text in DEGENERACY_FLAGS.items():  # the Degeneracy fields, one flag each
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(Degeneracy, name),
                            help=text + " (default %(default)s)")
    parser.add_argument("--excerpts", type=int, default=3, help="sample excerpts per run in report.md")
    parser.add_argument("--excerpt-chars", type=int, default=300, help="characters per excerpt")
    parser.add_argument("--export-samples", type=int, default=32, metavar="K",
                        help=f"write the first K samples of every run and scenario to OUT/{SAMPLES_FILE} (0 = off)")
    parser.add_argument("--wandb", choices=["online", "offline"], default=None,
                        help="also log the plots and the summary table to a wandb run (files under OUT/report_tracking)")
    parser.add_argument("--wandb-project", default=None, help="wandb project (default: the runs' own, else phf)")
    args = parser.parse_args(argv)
    out = args.out or args.dirs[0]
    try:
        degeneracy = Degeneracy(**{name: getattr(args, name) for name in DEGENERACY_FLAGS})
        result = build_report(args.dirs, out, args.scenario, degeneracy,
                              args.excerpts, args.excerpt_chars, args.export_samples)
    except OSError as e:
        if e.filename is None or not Path(e.filename).resolve().is_relative_to(out.resolve()):
            raise  # not a write into --out: reading a run failed, say it in full
        raise SystemExit(f"phf-report: cannot write the report into {out} ({e.strerror or type(e).__name__}: "
                         f"{e.filename}); --out must be a writable directory (it is created if missing)") from None
    groups = sum(1 for r in result["table"] if r["seeds"] > 1)
    print(f"phf-report: {_count(len(result['runs']), 'run')}, {_count(groups, 'multi-seed group')} -> "
          f"{result['report']} ({', '.join(p.name for p in result['figures']) or 'no figures'})")
    if args.wandb:
        run_id = log_to_wandb(result, args.out or args.dirs[0], args.dirs, args.wandb, args.wandb_project)
        print(f"phf-report: logged to wandb run {run_id} ({args.wandb})")
