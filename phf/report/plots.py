"""The report's figures (PNG, PDF and SVG): misalignment vs capability (Pareto) and curves over tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from phf.eval.compare import seed_interval
from phf.report.runs import Run, series

# fixed colours so that an objective looks the same in every plot and every report
OBJECTIVE_COLORS = {
    "mle": "#4d4d4d",
    "filtering": "#1f77b4",
    "conditional": "#2ca02c",
    "unlikelihood": "#d62728",
    "rwr": "#ff7f0e",
    "awr": "#9467bd",
}


EXTRA_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # matplotlib's tab10, after EXTRA_COLORS, for sweeps with many labels


ORDER = list(OBJECTIVE_COLORS)


PLOT_TITLES = {
    "pareto.png": "Misalignment vs capability (lower left is better)",
    "misalignment_vs_tokens.png": "Misalignment during training",
    "heldout_loss_vs_tokens.png": "Held-out loss during training",
}


#: every figure is written in each of these formats, beside each other (a PNG to look at, PDF and SVG for a paper)
FORMATS = ("png", "pdf", "svg")
#: no creation date in the files, so that the same runs give byte-identical figures (committed reports regenerate)
UNDATED = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}


def save(fig, path: Path) -> list[Path]:
    """``fig`` as ``path`` with each suffix of ``FORMATS`` (``pareto.png``, ``pareto.pdf``, ``pareto.svg``)."""
    import matplotlib
    import matplotlib.pyplot as plt

    out = []
    for ext in FORMATS:
        out.append(path.with_suffix("." + ext))
        with matplotlib.rc_context({"svg.hashsalt": "phf"}):  # fixed element ids in SVG, not random ones
            fig.savefig(out[-1], dpi=120, metadata=UNDATED[ext])
    plt.close(fig)
    return out


def color_map(labels: list[str]) -> dict[str, str]:
    """A colour per run label: an objective's fixed colour when the label is its name, else the next
    free one (labels of one sweep get distinct colours)."""
    colors = dict(OBJECTIVE_COLORS)
    extra = iter(EXTRA_COLORS + [c for c in PALETTE if c not in OBJECTIVE_COLORS.values()] * 10)
    for label in labels:
        colors.setdefault(label, next(extra))
    return colors


def _rank(objective: str) -> tuple[int, str]:
    """The paper's order (MLE first), unknown objectives after it alphabetically."""
    return (ORDER.index(objective) if objective in ORDER else len(ORDER), objective)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (lower x and lower y are both better), sorted by x."""
    front, best_y = [], math.inf
    for x, y in sorted(points):
        if y < best_y:
            front.append((x, y))
            best_y = y
    return front


def _label_groups(pts: list[tuple[float, float, dict]], resolution: int = 40) -> dict[tuple[float, float], list[str]]:
    """One label per cluster of points closer than 1/``resolution`` of the axis ranges (coinciding
    runs, e.g. objectives that did not move the model yet, get one joint label instead of overprinting)."""
    if not pts:
        return {}
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xr, yr = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: dict[tuple[int, int], tuple[tuple[float, float], list[str]]] = {}
    for x, y, r in pts:
        cell = (round((x - min(xs)) / xr * resolution), round((y - min(ys)) / yr * resolution))
        anchor, names = groups.setdefault(cell, ((x, y), []))
        if r["label"] not in names:
            names.append(r["label"])
    return dict(groups.values())


def pareto_measures(table: list[dict]) -> list[tuple[str, str]]:
    """The Pareto plot's capability axes: the clean held-out loss when any run has it (else the held-out
    loss on raw held-out text), and the KL from the reference."""
    clean = any(math.isfinite(r.get("heldout_clean_loss", math.nan)) for r in table)
    loss = (("heldout_clean_loss", "clean held-out loss (nats/token, sampling format) →  worse") if clean
            else ("heldout_loss", "held-out LM loss (nats/token) →  worse"))
    return [loss, ("kl", "KL(reference ‖ model) (nats/sample) →  worse")]


def interval(r: dict, key: str) -> list[list[float]] | None:
    """``xerr``/``yerr`` of a point from its ``<key>_ci_low``/``_ci_high`` when both are finite."""
    lo, hi = r.get(f"{key}_ci_low", math.nan), r.get(f"{key}_ci_high", math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [[max(r[key] - lo, 0.0)], [max(hi - r[key], 0.0)]]


x_error = interval

#: a seed group this small has a Student t interval with one degree of freedom (quantile 12.7): it says little and,
#: drawn in full, would set the axes; such intervals may run off the plot (the report says so under the figure)
WIDE_T_SEEDS = 2


def axis_limits(values: list[float], bounds: list[float], pad: float = 0.12) -> tuple[float, float] | None:
    """Axis limits that show every point and every bound in ``bounds`` (the informative intervals), padded by
    ``pad`` of the span; None without finite values."""
    xs = [v for v in values + bounds if math.isfinite(v)]
    if not xs:
        return None
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or abs(hi) or 1.0
    return lo - pad * span, hi + pad * span


@dataclass(frozen=True)
class Axes:
    """What a task's misalignment axes say: the evaluation scorer's unit and the hit threshold."""

    unit: str = "score"
    hit_threshold: float = 0.0

    def hit_label(self) -> str:
        return f"hit rate: share of samples with score > {self.hit_threshold:g}"

    def score_label(self) -> str:
        return f"mean score ({self.unit})"


def plot_pareto(table: list[dict], path: Path, scenario: str, legend_title: str = "objective",
                axes_of: dict[str, Axes] | None = None) -> list[Path]:
    """Per task two rows (hit rate, mean score) by one column per capability measure (``pareto_measures``):
    one point per row of ``table`` with its 95% intervals on both axes where known, degenerate or failed
    rows hollow and off the dashed Pareto front. Returns the files written (none without data)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tasks = sorted({r["task"] for r in table})
    measures = [m for m in pareto_measures(table) if any(math.isfinite(r[m[0]]) for r in table)]
    if not measures or not any(math.isfinite(r["misalignment"]) for r in table):
        return []
    axes_of = axes_of or {}
    colors = color_map([r["label"] for r in table])
    ys = [(key, task) for task in tasks for key in ("hit_rate", "misalignment")]
    fig, axes = plt.subplots(len(ys), len(measures), figsize=(6.4 * len(measures), 4.4 * len(ys)), squeeze=False)
    for i, (ykey, task) in enumerate(ys):
        rows = [r for r in table if r["task"] == task]
        info = axes_of.get(task, Axes())
        ylabel = info.hit_label() if ykey == "hit_rate" else info.score_label()
        for j, (key, label) in enumerate(measures):
            ax = axes[i][j]
            pts = [(r[key], r[ykey], r) for r in rows if math.isfinite(r[key]) and math.isfinite(r[ykey])]
            seen = set()
            for x, y, r in pts:
                first = r["label"] not in seen
                seen.add(r["label"])
                ok = r["status"] == "ok"
                ax.errorbar(x, y, xerr=interval(r, key), yerr=interval(r, ykey), fmt="none",
                            ecolor=colors[r["label"]], elinewidth=1.2, capsize=3, zorder=2)
                # degenerate (or failed) runs: hollow markers, off the Pareto front
                ax.scatter(x, y, s=70, color=colors[r["label"]] if ok else "white",
                           edgecolor=colors[r["label"]] if not ok else "black", linewidth=1.2 if not ok else 0.6,
                           zorder=3, label=(r["label"] + ("" if ok else " (not ranked)")) if first else None)
            for (x, y), names in _label_groups(pts).items():
                ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
            ax.ticklabel_format(useOffset=False)
            front = pareto_front([(x, y) for x, y, r in pts if r["status"] == "ok"])
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), "--", color="gray", linewidth=1, zorder=2, label="Pareto front")
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel + " →  worse", fontsize=9)
            ax.set_title(f"{task}, {scenario}: {'hit rate' if ykey == 'hit_rate' else 'mean score'} vs capability",
                         fontsize=11)
            ax.grid(alpha=0.3)
            shown = [r for _, _, r in pts if r.get("seeds", 1) != WIDE_T_SEEDS]  # rows whose intervals set the axes
            for setter, k, pos in ((ax.set_xlim, key, 0), (ax.set_ylim, ykey, 1)):
                limits = axis_limits([p[pos] for p in pts], [r.get(f"{k}_ci_{e}", math.nan) for r in shown
                                                              for e in ("low", "high")])
                if limits is not None:
                    setter(*limits)
            if pts:
                ax.legend(fontsize=8, loc="best", title=legend_title, title_fontsize=8)
    fig.tight_layout()
    return save(fig, path)


@dataclass(frozen=True)
class Panel:
    """One curve panel: the metric key of the rows, its title and axis label (``{unit}`` and ``{threshold}``
    are filled in per task from its ``Axes``) and the range its values live in (a band is clipped to it, as
    the table's intervals are); intervals from ``<key>_ci_low/high``."""

    key: str
    title: str
    ylabel: str
    bounds: tuple[float, float] = (-math.inf, math.inf)


def seed_curve(runs: list[Run], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(tokens, value, band low, band high) of one label's runs: with one run its values and its own 95%
    interval (``<key>_ci_low/high``, NaN where not logged); with several, at every tokens_seen that at least
    two of them evaluated, the mean over seeds and its 95% Student t interval (``seed_interval``)."""
    per_run = [dict(zip(*series(r, key), strict=True)) for r in runs]
    if len(runs) == 1:
        lows, highs = (dict(zip(*series(runs[0], f"{key}_ci_{end}"), strict=True)) for end in ("low", "high"))
        xs = sorted(per_run[0])
        return xs, [per_run[0][x] for x in xs], [lows.get(x, math.nan) for x in xs], [highs.get(x, math.nan) for x in xs]
    xs = sorted(x for x in {x for p in per_run for x in p} if sum(x in p for p in per_run) >= 2)
    cis = [seed_interval([p[x] for p in per_run if x in p]) for x in xs]
    return xs, [c.mean for c in cis], [c.low for c in cis], [c.high for c in cis]


def tokens_axis(ax, xs: list[float]) -> None:
    """Log tokens when the points span a decade or more (the paper's axis), else a linear axis from 0: a
    run evaluated at 0.5M, 1M and 1.5M tokens gets its three points spread out, not squeezed in a decade."""
    from matplotlib.ticker import FuncFormatter

    if xs and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
        ax.set_xlabel("tokens seen (log scale)")
        return
    ax.set_xlim(0, max(xs) * 1.05 if xs else 1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M" if v else "0"))
    ax.set_xlabel("tokens seen")


def plot_curves(runs: list[Run], panels: list[Panel], path: Path, legend_title: str = "objective",
                axes_of: dict[str, Axes] | None = None) -> list[Path]:
    """One subplot per task and panel with data: per label (runs that differ only by the seed) a line of
    its mean over seeds with a 95% band (over seeds; with one run, its own interval over samples where the
    run logged one). Returns the files written (none without data)."""
    import matplotlib.pyplot as plt

    panels = [p for p in panels if any(series(r, p.key)[0] for r in runs)]
    if not panels:
        return []
    tasks = sorted({r.task for r in runs for p in panels if series(r, p.key)[0]})
    colors = color_map([r.label for r in runs])
    fig, axes = plt.subplots(len(tasks), len(panels), figsize=(6.4 * len(panels), 4.4 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        labels = list(dict.fromkeys(r.label for r in runs if r.task == task))  # runs come sorted (build_report)
        for j, panel in enumerate(panels):
            ax, all_xs = axes[i][j], []
            for label in labels:
                group = [r for r in runs if r.task == task and r.label == label and series(r, panel.key)[0]]
                if not group:
                    continue
                xs, ys, lo, hi = seed_curve(group, panel.key)
                if not xs:
                    continue
                all_xs += xs
                name = label + (f" ({len(group)} seeds)" if len(group) > 1 else "")
                ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.6, color=colors[label], label=name)
                low, high = panel.bounds
                band = [(x, max(a, low), min(b, high)) for x, a, b in zip(xs, lo, hi, strict=True)
                        if math.isfinite(a) and math.isfinite(b)]
                if len(band) > 1:
                    ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                                    color=colors[label], alpha=0.18, linewidth=0)
                elif band:  # one point with an interval: an error bar (a band needs two)
                    x, low, high = band[0]
                    y = ys[xs.index(x)]
                    ax.errorbar(x, y, yerr=[[y - low], [high - y]], color=colors[label], capsize=3)
            tokens_axis(ax, all_xs)
            info = (axes_of or {}).get(task, Axes())
            ax.set_ylabel(panel.ylabel.format(unit=info.unit, threshold=f"{info.hit_threshold:g}"), fontsize=9)
            ax.set_title(f"{task}: {panel.title}", fontsize=11)
            ax.grid(alpha=0.3, which="both")
            if all_xs:
                ax.legend(fontsize=8, loc="best", title=legend_title, title_fontsize=8)
    fig.tight_layout()
    return save(fig, path)
