"""The report's PNG plots: misalignment vs capability (Pareto) and curves over tokens."""

from __future__ import annotations

import math
from pathlib import Path

from phf.report.fmt import _mantissa
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


def x_error(r: dict, key: str) -> list[list[float]] | None:
    """``xerr`` of a point from its ``<key>_ci_low``/``_ci_high`` when both are finite."""
    lo, hi = r.get(f"{key}_ci_low", math.nan), r.get(f"{key}_ci_high", math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [[max(r[key] - lo, 0.0)], [max(hi - r[key], 0.0)]]


def plot_pareto(table: list[dict], path: Path, scenario: str, legend_title: str = "objective") -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tasks = sorted({r["task"] for r in table})
    measures = [m for m in pareto_measures(table) if any(math.isfinite(r[m[0]]) for r in table)]
    if not measures or not any(math.isfinite(r["misalignment"]) for r in table):
        return False
    colors = color_map([r["label"] for r in table])
    fig, axes = plt.subplots(len(tasks), len(measures), figsize=(6.2 * len(measures), 4.6 * len(tasks)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        rows = [r for r in table if r["task"] == task]
        for j, (key, label) in enumerate(measures):
            ax = axes[i][j]
            pts = [(r[key], r["misalignment"], r) for r in rows if math.isfinite(r[key]) and math.isfinite(r["misalignment"])]
            seen = set()
            for x, y, r in pts:
                first = r["label"] not in seen
                seen.add(r["label"])
                ok = r["status"] == "ok"
                lo, hi = r.get("misalignment_ci_low", math.nan), r.get("misalignment_ci_high", math.nan)
                if math.isfinite(lo) and math.isfinite(hi):  # the 95% interval as an error bar
                    ax.errorbar(x, y, yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]], fmt="none",
                                ecolor=colors[r["label"]], elinewidth=1.2, capsize=3, zorder=2)
                if (xerr := x_error(r, key)) is not None:  # the capability's interval
                    ax.errorbar(x, y, xerr=xerr, fmt="none", ecolor=colors[r["label"]], elinewidth=1.2,
                                capsize=3, zorder=2)
                # degenerate (or failed) runs: hollow markers, off the Pareto front
                ax.scatter(x, y, s=70, color=colors[r["label"]] if ok else "white",
                           edgecolor=colors[r["label"]] if not ok else "black", linewidth=1.2 if not ok else 0.6,
                           zorder=3, label=(r["label"] + ("" if ok else " (degenerate)")) if first else None)
            for (x, y), names in _label_groups(pts).items():
                ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
            ax.ticklabel_format(useOffset=False)
            front = pareto_front([(x, y) for x, y, r in pts if r["status"] == "ok"])
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), "--", color="gray", linewidth=1, zorder=2, label="Pareto front")
            ax.set_xlabel(label)
            ax.set_ylabel(f"misalignment score ({scenario}) →  worse")
            ax.set_title(f"{task}: misalignment vs capability")
            ax.grid(alpha=0.3)
            ax.margins(0.15)
            if pts:
                ax.legend(fontsize=8, loc="best", title=legend_title, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_curves(runs: list[Run], key: str, ylabel: str, title: str, path: Path, log_y: bool = False,
                legend_title: str = "objective") -> bool:
    """One line per run, tokens seen on a log axis (and ``log_y`` when every value is positive); one
    subplot per task."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    data = [(r, *series(r, key)) for r in runs]
    data = [d for d in data if d[1]]
    if not data:
        return False
    tasks = sorted({r.task for r, _, _ in data})
    colors = color_map([r.label for r in runs])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        seen = set()
        for r, xs, ys in (d for d in data if d[0].task == task):  # runs come sorted (build_report)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, color=colors[r.label],
                    label=r.label if r.label not in seen else None)
            seen.add(r.label)
        ax.set_xscale("log")
        ax.set_xlabel("tokens seen (log scale)")
        task_ys = [y for r, _, ys in data if r.task == task for y in ys]
        if log_y and min(task_ys) > 0:
            ax.set_yscale("log")
            ax.set_ylabel(f"{ylabel} (log scale)")
            plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 0.035, not 3.5 x 10^-2
            ax.yaxis.set_major_formatter(plain)
            # minor ticks: all labelled within a decade, else only 2x and 5x (the rest would crowd the axis)
            sparse = FuncFormatter(lambda v, _: f"{v:.3g}" if _mantissa(v) in (2, 5) else "")
            ax.yaxis.set_minor_formatter(plain if max(task_ys) / min(task_ys) < 10 else sparse)
        else:
            ax.set_ylabel(ylabel)
        ax.set_title(f"{task}: {title}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best", title=legend_title, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
