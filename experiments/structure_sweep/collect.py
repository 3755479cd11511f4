"""Collect the structure sweep (issue 24, item 4): misalignment reduction against corpus structure.

    python experiments/structure_sweep/collect.py SWEEP_DIR [--stats DIR] [--out DIR]

Reads every run under SWEEP_DIR (``make structure-sweep`` writes SWEEP_DIR/runs, ``make structure-drop``
SWEEP_DIR/drop) with phf-report's loaders (``phf.report.find_runs``, ``load_run``) and the corpus statistic of
each structure point, ``--stats`` (default SWEEP_DIR/corpus_stats)/<point>.json (``python -m
phf.corpus_stats_cli ... out=``). A run's structure point is its config's ``structure.name``
(conf/structure/<point>.yaml).

A *cell* is one structure point and one conditional ``drop_token_fraction``: the runs of the point with that
drop fraction, plus the point's MLE runs when the cell has none of its own (MLE and filtering do not use
the drop fraction, so ``make structure-drop``'s conditional runs are compared with the main grid's MLE runs
of the same point and seeds). Each cell goes through phf-report's own per-scenario view
(``phf.report.scenario_view``): per objective, the seeds-as-unit hit rate and mean score (mean over seeds,
Student t interval over seeds) and, per objective other than MLE, the ratio to MLE paired by seed
(``phf.eval.compare.paired_ratio``: geometric mean of the per-seed ratios, t interval of the mean log; hit
rates continuity-corrected). Scenarios: phf-report's headline (``unconditional``, the paper's protocol:
both control tokens banned) and its secondary ones (``unconditional_sentence_level``: only
``<|misaligned|>`` banned). For objectives without control tokens both are the same samples (the secondary
reuses the first ones), so only conditional differs between them.

Writes to ``--out`` (default SWEEP_DIR):

* ``structure_sweep.csv``: one row per (point, drop fraction, objective, scenario): the point's settings and
  measured structure (protocol ratio from scores, per segment and per document, and from the ground truth;
  opening lift; content kappa),
  hit rate and mean score with their intervals over seeds, the clean held-out loss and KL, and the paired
  hit-rate and mean-score ratios to MLE with their intervals;
* ``structure_sweep.png`` / ``.pdf``: the conditional / MLE (and filtering / MLE) hit-rate ratio against the
  measured protocol ratio of each corpus, both sampling protocols, with the line y = x (what the paper's
  protocol could give a model that learned the corpus exactly) and y = 1 (no reduction);
* ``structure_sweep.md``: the same numbers as a Markdown table (the write-up's results).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter
from pathlib import Path

from phf.report import (
    OBJECTIVE_COLORS,
    ORDER,
    REFERENCE,
    Degeneracy,
    Run,
    Sweep,
    find_runs,
    headline_scenario,
    load_run,
    scenario_view,
    secondary_scenarios,
)

STRUCTURE_KEYS = ("content_coupling", "open_misaligned", "density", "opening_entities")
#: the keys phf.corpus_stats_cli records under ``settings`` (``structure_settings`` of the source)
STATS_SETTINGS = ("content_coupling", "open_misaligned", "density")
DROP_KEY = ("task", "objectives", "conditional", "drop_token_fraction")
#: compared with MLE in the plot (the CSV has every objective of the sweep)
PLOTTED = ("conditional", "filtering")
COLUMNS = [
    "point", *STRUCTURE_KEYS, "protocol_ratio", "protocol_ratio_doc", "protocol_ratio_truth", "opening_lift", "opening_lift_ci_low",
    "opening_lift_ci_high", "content_kappa", "drop_token_fraction", "objective", "scenario", "protocol", "seeds",
    "runs", "hit_rate", "hit_rate_ci_low", "hit_rate_ci_high", "hits", "num_samples", "mean_score",
    "mean_score_ci_low", "mean_score_ci_high", "heldout_clean_loss", "heldout_clean_loss_ci_low",
    "heldout_clean_loss_ci_high", "kl", "kl_ci_low", "kl_ci_high", "reference_runs", "seed_pairs",
    "hit_rate_ratio_per_seed", "hit_rate_ratio", "hit_rate_ratio_ci_low", "hit_rate_ratio_ci_high",
    "score_ratio", "score_ratio_ci_low", "score_ratio_ci_high", "status",
]


def _get(cfg: dict, keys: tuple[str, ...]):
    node = cfg
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def point_of(run: Run) -> str:
    name = _get(run.cfg, ("structure", "name"))
    if not isinstance(name, str) or not name:
        raise SystemExit(f"collect: {run.path / 'config.yaml'} has no structure.name: not a structure sweep run "
                         "(+experiment=structure_sweep structure=sK)")
    return name


def settings_of(run: Run) -> dict:
    source = _get(run.cfg, ("data", "source")) or {}
    return {k: source.get(k) for k in STRUCTURE_KEYS}


def drop_of(run: Run) -> float:
    value = _get(run.cfg, DROP_KEY)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SystemExit(f"collect: {run.path / 'config.yaml'}: {'.'.join(DROP_KEY)} must be a number, got {value!r}")
    return float(value)


def load_stats(stats_dir: Path, point: str, settings: dict) -> dict:
    """The corpus statistic of one point; its recorded settings must be the runs' (else it is stale)."""
    file = stats_dir / f"{point}.json"
    if not file.is_file():
        raise SystemExit(f"collect: no corpus statistic for structure point {point}: expected {file} "
                         f"(python -m phf.corpus_stats_cli +experiment=structure_sweep structure={point} out={file})")
    try:
        stats = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"collect: {file}: not JSON ({e})") from None
    scores = stats.get("scores") if isinstance(stats, dict) else None
    if not isinstance(scores, dict) or not isinstance(scores.get("protocol_ratio"), int | float):
        raise SystemExit(f"collect: {file}: expected a 'scores' object with a numeric 'protocol_ratio' "
                         "(phf.corpus_stats_cli with from=scores or both)")
    recorded = stats.get("settings") or {}
    for k in STATS_SETTINGS:
        if k in recorded and not _same(recorded[k], settings[k]):
            raise SystemExit(f"collect: {file} was measured at {k}={recorded[k]!r} but the runs of point {point} "
                             f"have data.source.{k}={settings[k]!r}: measure it again")
    truth = stats.get("truth") if isinstance(stats.get("truth"), dict) else {}
    lift = scores.get("opening_lift") if isinstance(scores.get("opening_lift"), dict) else {}
    return {"protocol_ratio": float(scores["protocol_ratio"]), "protocol_ratio_doc": doc_protocol_ratio(scores),
            "protocol_ratio_truth": _float(truth.get("protocol_ratio")),
            "opening_lift": _float(lift.get("ratio")), "opening_lift_ci_low": _float(lift.get("lo")),
            "opening_lift_ci_high": _float(lift.get("hi")), "content_kappa": _float(scores.get("content_kappa"))}


def doc_protocol_ratio(scores: dict) -> float:
    """The protocol ratio per document: P(a later segment of the document is misaligned | first aligned) /
    P(a later segment is misaligned), the second pooled from the two conditional counts. E.g. 65 of 1,208
    and 1,312 of 1,790: 0.053808 / (1,377 / 2,998 = 0.459306) = 0.11715."""
    a, m = scores.get("later_doc|first_aligned"), scores.get("later_doc|first_misaligned")
    if not (isinstance(a, dict) and isinstance(m, dict)) or not a.get("n") or not (a.get("k", 0) + m.get("k", 0)):
        return math.nan
    return (a["k"] / a["n"]) / ((a["k"] + m["k"]) / (a["n"] + m["n"]))


def _float(x) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def _same(a, b) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b))
    return a == b


def cells(runs: list[Run]) -> dict[tuple[str, float], list[Run]]:
    """{(point, drop fraction): runs}; a cell without MLE runs borrows its point's (one drop fraction only)."""
    by_point: dict[str, list[Run]] = {}
    for r in runs:
        by_point.setdefault(point_of(r), []).append(r)
    out: dict[tuple[str, float], list[Run]] = {}
    for point, rs in by_point.items():
        seen = {json.dumps(settings_of(r), sort_keys=True) for r in rs}
        if len(seen) > 1:
            raise SystemExit(f"collect: the runs of structure point {point} have different data.source settings "
                             f"({'; '.join(sorted(seen))}): one point, one corpus")
        mle = [r for r in rs if r.objective == REFERENCE]
        mle_drops = {drop_of(r) for r in mle}
        for drop in sorted({drop_of(r) for r in rs}):
            cell = [r for r in rs if drop_of(r) == drop]
            if not any(r.objective == REFERENCE for r in cell) and len(mle_drops) == 1:
                cell = mle + cell
            out[(point, drop)] = cell
    return dict(sorted(out.items()))


def collect(sweep_dir: Path, stats_dir: Path) -> list[dict]:
    """The CSV's rows (see the module docstring)."""
    paths = [p for p in find_runs([sweep_dir]) if stats_dir not in p.parents]
    if not paths:
        raise SystemExit(f"collect: no run (a directory with config.yaml) under {sweep_dir}")
    runs = []
    for p in paths:
        r = load_run(p)
        if r.damaged:
            print(f"collect: skipping run {p}: damaged file {r.damaged}", file=sys.stderr)
            continue
        runs.append(r)
    headline = headline_scenario(runs, None)
    scenarios = [headline, *secondary_scenarios(runs, headline)]
    by_objective = Sweep(["objective"], ["objective"], "structure sweep cell")
    rows = []
    stats_cache: dict[str, dict] = {}
    for (point, drop), cell in cells(runs).items():
        settings = settings_of(cell[0])
        if point not in stats_cache:
            stats_cache[point] = load_stats(stats_dir, point, settings)
        for scenario in scenarios:
            _, groups, comparisons = scenario_view(cell, scenario, by_objective, Degeneracy())
            vs_mle = {c["objective"]: c for c in comparisons}
            members = {}
            for r in cell:
                members.setdefault(r.objective, []).append(r.name)
            for g in sorted(groups, key=lambda g: ORDER.index(g["objective"]) if g["objective"] in ORDER else len(ORDER)):
                c = vs_mle.get(g["objective"], {})
                rows.append({
                    "point": point, **{k: _show(v) for k, v in settings.items()}, **stats_cache[point],
                    "drop_token_fraction": drop, "objective": g["objective"], "scenario": scenario,
                    "protocol": "paper (primary)" if scenario == headline else "sentence-level (secondary)",
                    "seeds": g["seeds"], "runs": " ".join(members[g["objective"]]),
                    "hit_rate": g["hit_rate"], "hit_rate_ci_low": g["hit_rate_ci_low"],
                    "hit_rate_ci_high": g["hit_rate_ci_high"], "hits": g["hits"], "num_samples": g["num_samples"],
                    "mean_score": g["misalignment"], "mean_score_ci_low": g["misalignment_ci_low"],
                    "mean_score_ci_high": g["misalignment_ci_high"],
                    **{k: g.get(k, math.nan) for k in ("heldout_clean_loss", "heldout_clean_loss_ci_low",
                                                      "heldout_clean_loss_ci_high", "kl", "kl_ci_low", "kl_ci_high")},
                    "reference_runs": " ".join(members.get(REFERENCE, [])) if c else "",
                    "seed_pairs": c.get("seed_pairs", ""), "hit_rate_ratio_per_seed": c.get("hit_rate_ratios", ""),
                    **{k: c.get(k, math.nan) for k in ("hit_rate_ratio", "hit_rate_ratio_ci_low",
                                                      "hit_rate_ratio_ci_high", "score_ratio", "score_ratio_ci_low",
                                                      "score_ratio_ci_high")},
                    "status": g["status"],
                })
    return rows


def _show(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _fmt(x, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, float) and math.isfinite(x) else "–"


def _ci(r: dict, key: str) -> str:
    return f"{_fmt(r[key])} [{_fmt(r[key + '_ci_low'])}, {_fmt(r[key + '_ci_high'])}]"


def markdown(rows: list[dict]) -> str:
    lines = ["| point | c | p | openings | protocol ratio | drop | protocol | objective | seeds | hit rate [95% t] "
             "| mean score [95% t] | hit-rate ratio vs MLE (paired) [95% t] | score ratio vs MLE [95% t] "
             "| clean held-out loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = _ci(r, "hit_rate_ratio") if r["objective"] != REFERENCE else "–"
        score = _ci(r, "score_ratio") if r["objective"] != REFERENCE else "–"
        lines.append(f"| {r['point']} | {r['content_coupling']} | {r['open_misaligned']} | "
                     f"{'any' if r['opening_entities'] == 'null' else 'detected'} | {_fmt(r['protocol_ratio'], 2)} | "
                     f"{r['drop_token_fraction']:g} | {r['protocol']} | {r['objective']} | {r['seeds']} | "
                     f"{_ci(r, 'hit_rate')} | {_ci(r, 'mean_score')} | {ratio} | {score} | "
                     f"{_fmt(r['heldout_clean_loss'], 4)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], png: Path, pdf: Path) -> None:
    """Reduction (objective / MLE hit rate, paired over seeds, 95% t interval) against the protocol ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 6.8))
    # the main grid's drop fraction: the one of most points (ties: the smallest); other cells are the drop lever's
    points_per_drop = Counter(d for _, d in {(r["point"], r["drop_token_fraction"]) for r in rows})
    base = min(points_per_drop, key=lambda d: (-points_per_drop[d], d)) if rows else None
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    styles = {p: ("o", "-", "full") if i == 0 else ("s", "--", "none") for i, p in enumerate(protocols)}
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["objective"] not in PLOTTED or not math.isfinite(r["hit_rate_ratio"]):
            continue
        primary = r["protocol"] == protocols[0]
        if r["objective"] != "conditional" and not primary:
            continue  # no control tokens: the secondary protocol is the same samples
        series.setdefault((r["objective"], r["protocol"], r["drop_token_fraction"]), []).append(r)
    offsets = {key: 0.006 * (i - (len(series) - 1) / 2) for i, key in enumerate(sorted(series, key=str))}
    for (objective, protocol, drop), pts in sorted(series.items(), key=lambda kv: str(kv[0])):
        pts.sort(key=lambda r: r["protocol_ratio"])
        marker, line, fill = styles[protocol]
        variant = drop != base
        if variant:
            marker, line = "D", "none"
        xs = [r["protocol_ratio"] + offsets[(objective, protocol, drop)] for r in pts]
        ys = [r["hit_rate_ratio"] for r in pts]
        yerr = [[max(r["hit_rate_ratio"] - r["hit_rate_ratio_ci_low"], 0.0) if math.isfinite(r["hit_rate_ratio_ci_low"])
                 else 0.0 for r in pts],
                [max(r["hit_rate_ratio_ci_high"] - r["hit_rate_ratio"], 0.0) if math.isfinite(r["hit_rate_ratio_ci_high"])
                 else 0.0 for r in pts]]
        label = (f"{objective} / MLE, {protocol}" if objective == "conditional" else
                 f"{objective} / MLE (no control tokens: one protocol)") + (f", drop_token_fraction {drop:g}" if variant else "")
        color = OBJECTIVE_COLORS.get(objective, "black")
        ax.errorbar(xs, ys, yerr=yerr, color=color, marker=marker, linestyle=line, fillstyle=fill, markersize=7,
                    capsize=3, linewidth=1.4, label=label, zorder=3)
    ax.set_yscale("log")
    x_all = [r["protocol_ratio"] for r in rows]
    lo_x, hi_x = min(min(x_all) - 0.05, 0.0), max(max(x_all) + 0.05, 1.0)
    start = max(min(x_all) * 0.8, 1e-3)
    grid = [start + (hi_x - start) * i / 100 for i in range(101)]
    ax.plot(grid, grid, ":", color="gray", linewidth=1.2,
            label="y = protocol ratio (a model that learned the corpus exactly)", zorder=1)
    ax.axhline(1.0, color="black", linewidth=0.8, alpha=0.6, label="y = 1 (no reduction)", zorder=1)
    for r in rows:
        if r["objective"] == REFERENCE and r["protocol"] == protocols[0] and r["drop_token_fraction"] == base:
            ax.annotate(r["point"], (r["protocol_ratio"], 1.0), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=9, color="dimgray")
    ax.set_xlim(lo_x, hi_x)
    ax.set_xlabel("protocol ratio of the corpus (presidio scores):\n"
                  "P(later segment misaligned | first aligned) / P(later segment misaligned)")
    ax.set_ylabel("hit rate ratio to MLE (paired by seed, 95% t)  ← fewer hits")
    seeds = sorted({r["seeds"] for r in rows})
    ax.set_title(f"When does prefix conditioning work? PII on local_pii ({'/'.join(map(str, seeds))} seeds per arm)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    fig.savefig(pdf)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--stats", type=Path, default=None, help="corpus statistics (default SWEEP_DIR/corpus_stats)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default SWEEP_DIR)")
    args = ap.parse_args(argv)
    stats = args.stats or args.sweep_dir / "corpus_stats"
    out = args.out or args.sweep_dir
    rows = collect(args.sweep_dir, stats)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "structure_sweep.csv")
    (out / "structure_sweep.md").write_text(markdown(rows))
    plot(rows, out / "structure_sweep.png", out / "structure_sweep.pdf")
    print(markdown(rows))
    print(f"collect: {len(rows)} rows -> {out / 'structure_sweep.csv'}, {out / 'structure_sweep.png'} (.pdf), "
          f"{out / 'structure_sweep.md'}")
    return rows


if __name__ == "__main__":
    main()
